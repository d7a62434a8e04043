# attack: chr()-built dunder name for getattr
# expect: static.builtin
def f(n):
    name = chr(95) * 2 + "class" + chr(95) * 2
    return getattr(n, name)
