# attack: a class body executing code
# expect: static.class
class Evil:
    x = [i for i in range(10 ** 6)]
def f(n):
    return len(Evil.x)
