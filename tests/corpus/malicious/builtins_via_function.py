# attack: builtins from a function's globals
# expect: static.dunder
def f(n):
    def g():
        return 0
    return g.__globals__["__builtins__"]
