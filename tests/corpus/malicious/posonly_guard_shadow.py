# attack: positional-only parameter shadowing a guard name
# expect: static.private-name
def f(n):
    def helper(_getattr_=None, /):
        return n.real
    return helper(lambda o, a: o)
