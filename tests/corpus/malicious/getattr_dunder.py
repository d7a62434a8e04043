# attack: getattr indirection with a built name
# expect: static.builtin
def f(n):
    return getattr(n, "__cl" + "ass__")
