# attack: numpy.ctypeslib loads a shared library
# expect: static.attribute
import numpy as np
def f(n):
    return np.ctypeslib.load_library("libc", "/lib")
