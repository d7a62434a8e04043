# attack: mpmath.libmp.backend.os
# expect: static.module-attr
import mpmath
def f(n):
    return mpmath.libmp.backend.os.getcwd()
