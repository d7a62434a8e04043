# attack: map(getattr, ...) indirection
# expect: static.builtin
def f(n):
    return list(map(getattr, [n], ["real"]))
