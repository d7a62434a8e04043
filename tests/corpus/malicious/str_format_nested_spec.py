# attack: attribute access hidden in a nested format spec
# expect: static.format
def f(n):
    return "{0:{1.real}}".format(n, 3)
