# attack: types.CodeType / FunctionType
# expect: static.import
import types
def f(n):
    return types.FunctionType
