# attack: type(int) is the real type; called with three arguments it builds a class
# expect: static.type-call
def f(n):
    return type(int)("X", (), {"y": 1}).y
