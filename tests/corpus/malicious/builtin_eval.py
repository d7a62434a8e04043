# attack: eval() is refused
# expect: static.builtin
def f(n):
    return eval('1+1')
