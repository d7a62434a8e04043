# attack: a computed dunder keyword through ** (sets a dunder on a new class)
# expect: static.dunder-string
import sympy
def f(n):
    return sympy.Function("g", **{"__array_interface__": {"data": (n, False)}})
