# attack: import gc
# expect: static.import
import gc
def f(n):
    return gc.get_objects()
