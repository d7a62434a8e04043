# attack: str.format's attribute fields through sympify, with the template passed as data
# expect: static.eval-sink
import sympy


def f(n):
    d = '_' * 2
    fmt = '{0.' + d + 'class' + d + '}'
    return str(sympy.sympify('t.format(o)', locals={'t': fmt, 'o': sympy.Symbol('x')}))
