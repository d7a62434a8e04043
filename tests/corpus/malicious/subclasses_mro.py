# attack: class graph walk without dunders via mro()
# expect: static.attribute
def f(n):
    return [c for c in type(n).mro()]
