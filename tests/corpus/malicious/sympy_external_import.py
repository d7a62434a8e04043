# attack: sympy.external.import_module loads any module
# expect: static.import
from sympy.external import import_module
def f(n):
    return import_module("os").getcwd()
