# attack: delattr() is refused
# expect: static.builtin
def f(n):
    return delattr(n, 'real')
