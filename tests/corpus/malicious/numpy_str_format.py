# attack: np.str_.format is the unguarded unbound str.format
# expect: static.format
import numpy as np
def f(n):
    return np.str_.format("{0.real.imag}", n)
