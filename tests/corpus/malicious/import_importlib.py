# attack: import importlib
# expect: static.import
import importlib
def f(n):
    return importlib.import_module('os')
