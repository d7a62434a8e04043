# attack: functools.reduce over getattr
# expect: static.builtin
from functools import reduce
def f(n):
    return reduce(getattr, ["real", "imag"], n)
