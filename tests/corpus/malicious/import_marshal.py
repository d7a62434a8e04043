# attack: import marshal
# expect: static.import
import marshal
def f(n):
    return marshal.loads(b'')
