# attack: str.format with attribute access in the format string
# expect: static.format
def f(n):
    return "{0.real.imag.conjugate}".format(n)
