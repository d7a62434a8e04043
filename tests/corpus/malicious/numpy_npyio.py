# attack: numpy.lib.npyio reaches files
# expect: static.attribute
import numpy
def f(n):
    return numpy.lib.npyio.os
