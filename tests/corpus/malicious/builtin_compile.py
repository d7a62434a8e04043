# attack: compile() is refused
# expect: static.builtin
def f(n):
    return compile('1', 'x', 'eval')
