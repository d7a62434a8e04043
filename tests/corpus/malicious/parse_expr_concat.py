# attack: parse_expr with an evaluator name split across literals
# expect: static.eval-sink
from sympy.parsing.sympy_parser import parse_expr
def f(n):
    return parse_expr("ev" + "al('1')")
