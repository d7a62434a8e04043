# attack: import dataclasses
# expect: static.import
import dataclasses
def f(n):
    return dataclasses.builtins
