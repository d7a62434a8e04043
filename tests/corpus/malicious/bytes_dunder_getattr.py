# attack: getattr with a decoded bytes name
# expect: static.builtin
def f(n):
    return getattr(n, b"__class__".decode())
