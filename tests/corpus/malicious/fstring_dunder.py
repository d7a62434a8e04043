# attack: f-string reaching __class__
# expect: static.dunder
def f(n):
    return f"{n.__class__.__mro__}"
