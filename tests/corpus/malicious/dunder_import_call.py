# attack: __import__ called directly
# expect: static.dunder
def f(n):
    return __import__("os").getcwd()
