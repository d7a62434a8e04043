# attack: a record array with an object field over caller-supplied bytes
# expect: static.module-attr
import numpy as np
def f(n):
    return np.rec.fromstring(n.to_bytes(8, "little"), dtype=[("a", "O")])
