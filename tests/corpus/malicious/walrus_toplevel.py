# attack: walrus at top level runs code at definition time
# expect: static.toplevel
X = (y := sum(range(10)))
def f(n):
    return X
