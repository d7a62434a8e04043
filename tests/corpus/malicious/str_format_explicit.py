# attack: str.format called unbound on a computed string
# expect: static.format
def f(n):
    fmt = "{0." + "real}"
    return str.format(fmt, n)
