# attack: positional-only parameters on the main function
# expect: static.signature
def f(n, /):
    return n
