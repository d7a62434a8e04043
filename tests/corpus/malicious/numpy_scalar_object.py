# attack: multiarray.scalar with an object dtype turns bytes into an object pointer
# expect: static.module-attr
import numpy as np
def f(n):
    return np.core.multiarray.scalar(np.dtype("O"), n.to_bytes(8, "little"))
