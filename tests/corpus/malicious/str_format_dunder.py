# attack: str.format reaching __globals__
# expect: static.dunder-string
def f(n):
    def helper():
        return 1
    return "{0.__globals__}".format(helper)
