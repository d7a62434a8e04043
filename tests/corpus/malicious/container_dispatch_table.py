# attack: copy.dispatch_table holds numpy's metaclass among its keys
# expect: static.module-attr
import copy


def f(n):
    return [k for k in copy.dispatch_table][n]
