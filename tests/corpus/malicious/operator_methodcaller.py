# attack: operator.methodcaller
# expect: static.import
from operator import methodcaller
def f(n):
    return methodcaller("conjugate")(n)
