# attack: the same dict as sympy.strategies.util.basic_fns, imported from another module
# expect: static.module-attr
from sympy.strategies.branch.traverse import basic_fns


def f(n):
    return basic_fns.get('op')
