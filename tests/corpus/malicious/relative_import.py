# attack: a relative import
# expect: static.import
from . import server
def f(n):
    return server
