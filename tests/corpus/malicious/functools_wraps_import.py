# attack: functools.wraps is update_wrapper with the names as data
# expect: static.module-attr
from functools import wraps


def f(n):
    return wraps(n)
