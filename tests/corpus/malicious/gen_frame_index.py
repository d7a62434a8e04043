# attack: frame globals via a generator in a comprehension
# expect: static.attribute
def f(n):
    g = (i for i in range(n))
    return list(g.gi_frame.f_globals)
