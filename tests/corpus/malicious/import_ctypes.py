# attack: import ctypes
# expect: static.import
import ctypes
def f(n):
    return ctypes.CDLL(None)
