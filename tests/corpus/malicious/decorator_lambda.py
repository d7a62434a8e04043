# attack: a lambda decorator
# expect: static.decorator
@(lambda fn: fn)
def f(n):
    return n
