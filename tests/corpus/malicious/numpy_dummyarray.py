# attack: DummyArray with an __array_interface__ dict views an arbitrary address
# expect: static.attribute
import numpy as np
def f(n):
    iface = {"data": (n, False), "shape": (64,), "typestr": "|u1", "version": 3}
    return np.asarray(np.lib.stride_tricks.DummyArray(iface, None)).tolist()
