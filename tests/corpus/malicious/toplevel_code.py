# attack: code at module level runs at definition time
# expect: static.toplevel
import math
print("loading")
def f(n):
    return math.sqrt(n)
