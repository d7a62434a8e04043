# attack: typing's public alias of operator
# expect: static.module-attr
import typing
def f(n):
    return typing.operator.attrgetter("real")(n)
