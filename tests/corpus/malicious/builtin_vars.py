# attack: vars() is refused
# expect: static.builtin
def f(n):
    return vars()
