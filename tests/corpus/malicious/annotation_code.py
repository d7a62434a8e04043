# attack: an annotation that calls code
# expect: static.annotation
def f(n: print("pwned")) -> int:
    return n
