# attack: a default argument runs code at definition time
# expect: static.default
def f(n, data=sum(range(10 ** 8))):
    return n + data
