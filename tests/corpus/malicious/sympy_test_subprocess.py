# attack: sympy.test() starts subprocesses
# expect: static.module-attr
import sympy
def f(n):
    return sympy.test("core")
