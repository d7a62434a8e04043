# attack: typing.get_type_hints evaluates string annotations
# expect: static.annotation
import typing
def g(a: "open(\"/etc/passwd\").read()") -> int:
    return 1
def f(n):
    return typing.get_type_hints(g)
