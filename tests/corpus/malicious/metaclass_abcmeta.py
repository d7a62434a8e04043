# attack: a metaclass reached by attribute builds classes like type()
# expect: static.metaclass
import numbers
def f(n):
    return numbers.ABCMeta("X", (), {"y": 1}).y
