# attack: sympify evaluates __import__
# expect: static.eval-sink
import sympy
def f(n):
    return sympy.sympify("__import__('os').system('id')")
