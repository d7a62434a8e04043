# attack: functools.partial wrapping getattr
# expect: static.builtin
import functools
def f(n):
    g = functools.partial(getattr, n)
    return g("real")
