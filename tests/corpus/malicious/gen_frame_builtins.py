# attack: generator gi_frame.f_back.f_builtins walk to eval
# expect: static.attribute
def f(n):
    def gen():
        yield 1
    g = gen()
    b = g.gi_frame.f_back.f_builtins
    return b["eval"]("1+1")
