# attack: an object ndarray over caller-supplied bytes (pointers from data)
# expect: static.call-limit
import numpy as np
def f(n):
    return np.ndarray((1,), object, n.to_bytes(8, "little"))
