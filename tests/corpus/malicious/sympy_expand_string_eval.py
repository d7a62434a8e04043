# attack: a sympy function that sympifies its string argument (no sympify in sight)
# expect: static.eval-sink
import sympy
def f(n):
    return sympy.expand("ev" + "al(\"1\")")
