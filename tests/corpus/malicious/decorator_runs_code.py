# attack: a decorator runs code at definition time
# expect: static.decorator
def deco(fn):
    return fn
@deco
def f(n):
    return n
