# attack: hasattr probing a dunder
# expect: static.hasattr
def f(n):
    return hasattr(n, "__class__")
