# attack: sympy exports its metaclasses
# expect: static.metaclass
from sympy.core.function import FunctionClass
def f(n):
    return FunctionClass("X", (), {})
