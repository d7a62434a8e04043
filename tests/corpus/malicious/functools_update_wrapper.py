# attack: update_wrapper copies attributes named by data (any dunder) onto a function
# expect: static.module-attr
import functools
import numpy as np


def f(n):
    d = '_' * 2
    g = lambda: n
    functools.update_wrapper(g, np.zeros(4), assigned=(d + 'array_interface' + d,), updated=())
    return np.asarray(g)[0]
