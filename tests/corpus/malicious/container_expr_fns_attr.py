# attack: the same container reached as an attribute of its module
# expect: static.module-attr
import sympy.strategies.util as util


def f(n):
    return next(iter(util.expr_fns.values()))
