# attack: input() is refused
# expect: static.builtin
def f(n):
    return input()
