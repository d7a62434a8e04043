# attack: sympy.Function(name, bases, namespace) is type() with three arguments
# expect: static.call-limit
import sympy
def f(n):
    return sympy.Function("g", (sympy.Basic,), {"y": n})
