# attack: import inspect
# expect: static.import
import inspect
def f(n):
    return inspect.currentframe()
