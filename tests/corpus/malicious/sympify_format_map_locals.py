# attack: str.format_map's attribute fields through sympify, the template passed as data
# expect: static.eval-sink
import sympy


def f(n):
    d = '_' * 2
    return str(sympy.sympify('t.format_map(m)', locals={'t': '{o.' + d + 'class' + d + '}',
                                                        'm': {'o': n}}))
