# attack: numpy.save writes files
# expect: static.attribute
import numpy as np
def f(n):
    np.save("/tmp/x", np.zeros(2))
    return 1
