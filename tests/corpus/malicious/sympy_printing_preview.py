# attack: sympy.printing.preview
# expect: static.import
from sympy.printing.preview import preview
def f(n):
    return preview
