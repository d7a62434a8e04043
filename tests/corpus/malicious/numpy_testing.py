# attack: numpy.testing imports subprocess helpers
# expect: static.import
import numpy.testing
def f(n):
    return 1
