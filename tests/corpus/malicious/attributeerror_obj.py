# attack: AttributeError.obj leaks the refused object
# expect: static.exception-obj
import math
def f(n):
    try:
        return math.nosuchthing
    except AttributeError as err:
        return err.obj
