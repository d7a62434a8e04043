# attack: from numpy import load
# expect: static.module-attr
from numpy import load
def f(n):
    return load("/tmp/x.npy")
