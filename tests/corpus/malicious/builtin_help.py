# attack: help() is refused
# expect: static.builtin
def f(n):
    return help(n)
