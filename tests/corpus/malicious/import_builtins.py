# attack: import builtins
# expect: static.import
import builtins
def f(n):
    return builtins.eval('1')
