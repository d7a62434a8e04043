# attack: exec() is refused
# expect: static.builtin
def f(n):
    return exec('x=1')
