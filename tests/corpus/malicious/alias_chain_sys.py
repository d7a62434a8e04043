# attack: module aliased through a variable, then .sys
# expect: static.module-attr
import statistics
def f(n):
    mod = statistics
    return mod.sys.modules
