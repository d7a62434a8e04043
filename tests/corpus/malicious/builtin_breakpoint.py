# attack: breakpoint() is refused
# expect: static.builtin
def f(n):
    return breakpoint()
