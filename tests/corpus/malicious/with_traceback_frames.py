# attack: with_traceback to graft frames
# expect: static.attribute
def f(n, tb=None):
    return ValueError().with_traceback(tb)
