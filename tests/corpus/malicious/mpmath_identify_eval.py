# attack: mpmath.identify evaluates the constants it is given as Python
# expect: static.eval-sink
import mpmath
def f(n):
    return mpmath.identify(1.5, ["open(\"/etc/passwd\").read()"])
