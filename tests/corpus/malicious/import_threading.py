# attack: import threading
# expect: static.import
import threading
def f(n):
    return threading.Thread
