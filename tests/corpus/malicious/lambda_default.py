# attack: a lambda default that calls code
# expect: static.default
def f(n):
    key = lambda v, t=print("side effect"): v
    return key(n)
