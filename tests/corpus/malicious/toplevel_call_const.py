# attack: a top-level 'constant' that calls code
# expect: static.toplevel
TABLE = list(range(10 ** 7))
def f(n):
    return TABLE[n]
