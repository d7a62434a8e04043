# attack: reading __name__/__loader__
# expect: static.dunder
def f(n):
    return __loader__
