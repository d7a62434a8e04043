# attack: tb_frame from exc_info-like object
# expect: static.attribute
def f(n, tb=None):
    return tb.tb_frame
