# attack: import pickle
# expect: static.import
import pickle
def f(n):
    return pickle.loads(b'')
