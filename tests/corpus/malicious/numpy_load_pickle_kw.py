# attack: allow_pickle on any loader
# expect: static.pickle
import numpy as np
def f(n, loader=None):
    return loader("x.npy", allow_pickle=True)
