# attack: from builtins import eval
# expect: static.import
from builtins import eval as e
def f(n):
    return e("1")
