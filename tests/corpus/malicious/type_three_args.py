# attack: type() with three arguments builds a class
# expect: static.type-call
def f(n):
    T = type("T", (), {"x": 1})
    return T.x
