# attack: the real `type` out of a library container (sympy.strategies.util.basic_fns), then a
# class with an __array_interface__ over any address
# expect: static.module-attr
import numpy as np
from sympy.strategies.util import basic_fns


def f(n):
    maker = basic_fns.get('op')
    d = '_' * 2
    iface = {'data': (n, False), 'shape': (16,), 'typestr': '|u1', 'version': 3}
    return np.asarray(maker('View', (object,), {d + 'array_interface' + d: iface})())[0]
