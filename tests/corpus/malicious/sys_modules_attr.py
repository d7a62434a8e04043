# attack: a .modules attribute from some object
# expect: static.attribute
def f(n, m=None):
    return m.modules
