# attack: fullwidth letters inside a dunder attribute
# expect: static.confusable-identifier
def f(n):
    return n.__ｃlass__
