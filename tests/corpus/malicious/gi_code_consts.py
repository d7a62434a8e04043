# attack: generator code object constants
# expect: static.attribute
def f(n):
    g = (i for i in range(3))
    return g.gi_code.co_consts
