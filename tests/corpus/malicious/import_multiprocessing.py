# attack: import multiprocessing
# expect: static.import
import multiprocessing
def f(n):
    return multiprocessing.Process
