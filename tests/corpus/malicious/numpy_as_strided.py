# attack: as_strided gives a view over memory outside the array
# expect: static.attribute
from numpy.lib.stride_tricks import as_strided
import numpy as np
def f(n):
    return as_strided(np.zeros(1), shape=(10 ** 6,), strides=(8,)).tolist()
