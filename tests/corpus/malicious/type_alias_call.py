# attack: calling the alias type[int] calls type() with the same arguments (a new class)
# expect: static.type-call
def f(n):
    return type[int]('View', (object,), {})
