# attack: numpy.ScalarType holds the builtin memoryview
# expect: static.module-attr
import numpy as np


def f(n):
    return np.ScalarType[n]
