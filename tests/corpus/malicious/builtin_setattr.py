# attack: setattr() is refused
# expect: static.builtin
def f(n):
    return setattr(n, 'real', 1)
