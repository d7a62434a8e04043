# attack: ndarray.ctypes exposes raw pointers
# expect: static.attribute
import numpy as np
def f(n):
    return np.zeros(3).ctypes.data
