# attack: warnings.sys.modules
# expect: static.import
import warnings
def f(n):
    return warnings.sys.modules["os"].system("id")
