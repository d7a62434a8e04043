# attack: sympify of a chr()-built string
# expect: static.eval-sink
import sympy
def f(n):
    s = "".join(chr(c) for c in [111, 112, 101, 110])
    return sympy.S(s + "('/etc/passwd')")
