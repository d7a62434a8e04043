# attack: id() hands out an address, the raw material of raw-memory routes
# expect: static.builtin
def f(n):
    return id(f)
