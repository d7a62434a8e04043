# attack: sympify evaluates open()
# expect: static.eval-sink
from sympy import sympify
def f(n):
    return sympify("open('/etc/passwd').read()")
