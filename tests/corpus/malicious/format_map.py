# attack: format_map with a mapping of objects
# expect: static.attribute
def f(n):
    return "{x.real}".format_map({"x": n})
