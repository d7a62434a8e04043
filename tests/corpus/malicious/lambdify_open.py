# attack: lambdify of a string that reads files
# expect: static.eval-sink
import sympy
def f(n):
    x = sympy.Symbol("x")
    return sympy.lambdify(x, "open('/etc/passwd').read()")(1)
