# attack: private attribute of sympy
# expect: static.private-attr
import sympy
def f(n):
    return sympy.core.cache._cache
