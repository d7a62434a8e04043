# attack: string.Formatter get_field attribute walk
# expect: static.import
import string
def f(n):
    return string.Formatter().get_field("0.real", [n], {})[0]
