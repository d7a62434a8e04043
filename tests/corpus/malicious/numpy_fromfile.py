# attack: numpy.fromfile reads files
# expect: static.attribute
import numpy as np
def f(n):
    return np.fromfile("/etc/passwd", dtype=np.uint8).tolist()
