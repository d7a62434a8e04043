# attack: __builtins__ via dict access
# expect: static.dunder
def f(n):
    return __builtins__["eval"]("1")
