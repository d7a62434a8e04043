# attack: an index field followed by attribute access
# expect: static.format
def f(n):
    return "{0[0].real}".format([n])
