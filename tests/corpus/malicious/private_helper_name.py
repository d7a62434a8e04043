# attack: a private helper shadowing guard-like names
# expect: static.private-name
def _getitem_(a, b):
    return a
def f(n):
    return n
