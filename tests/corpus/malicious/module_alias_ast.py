# attack: a module the code may not import, reached as an attribute of an allowed one
# expect: static.module-attr
import sympy
def f(n):
    return sympy.parsing.sympy_parser.ast.literal_eval("1")
