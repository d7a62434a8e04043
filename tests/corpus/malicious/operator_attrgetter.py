# attack: operator.attrgetter
# expect: static.import
import operator
def f(n):
    return operator.attrgetter("__class__")(n)
