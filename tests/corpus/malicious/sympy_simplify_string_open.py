# attack: simplify() of a string evaluates it as Python
# expect: static.eval-sink
import sympy as sp
def f(n):
    return sp.simplify("open(\"/etc/passwd\").read()")
