# attack: sys.modules lookup
# expect: static.import
import sys
def f(n):
    return sys.modules["os"].listdir("/")
