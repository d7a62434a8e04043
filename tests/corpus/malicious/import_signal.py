# attack: import signal
# expect: static.import
import signal
def f(n):
    return signal.alarm(0)
