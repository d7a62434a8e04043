# attack: dir() is refused
# expect: static.builtin
def f(n):
    return dir()
