# attack: an allowed module's public alias of sys
# expect: static.module-attr
import fractions
def f(n):
    return fractions.sys.modules["os"].getcwd()
