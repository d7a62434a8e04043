# attack: open() is refused
# expect: static.builtin
def f(n):
    return open('/etc/passwd').read()
