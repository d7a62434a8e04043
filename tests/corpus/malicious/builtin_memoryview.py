# attack: memoryview() is refused
# expect: static.builtin
def f(n):
    return memoryview(b'x')
