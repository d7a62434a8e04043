# attack: super() is refused
# expect: static.builtin
def f(n):
    return super()
