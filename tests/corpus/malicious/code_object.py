# attack: code object construction via __code__.replace
# expect: static.dunder
def f(n):
    def g():
        return 1
    return g.__code__.replace(co_consts=(2,))
