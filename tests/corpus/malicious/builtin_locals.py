# attack: locals() is refused
# expect: static.builtin
def f(n):
    return locals()
