# attack: resize without the reference check leaves a view over freed memory
# expect: static.raw-memory
import numpy as np
def f(n):
    a = np.zeros(4)
    v = a[:]
    a.resize(10 ** 6, refcheck=False)
    return v.tolist()
