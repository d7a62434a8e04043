# attack: the same as_strided, re-exported by another numpy module
# expect: static.attribute
import numpy as np
def f(n):
    return np.lib.index_tricks.as_strided(np.zeros(1), shape=(4096,), strides=(8,))
