# attack: sympy.preview runs latex in a subprocess
# expect: static.attribute
import sympy
def f(n):
    return sympy.preview(sympy.Symbol("x"))
