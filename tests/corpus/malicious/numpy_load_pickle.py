# attack: numpy.load with allow_pickle
# expect: static.module-attr
import numpy as np
def f(n):
    return np.load("/tmp/x.npy", allow_pickle=True)
