# attack: globals() is refused
# expect: static.builtin
def f(n):
    return globals()
