# attack: a star import hides which names arrive
# expect: static.import
from math import *
def f(n):
    return sqrt(n)
