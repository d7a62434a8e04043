# attack: random._os reaches os through an allowed module
# expect: static.private-attr
import random
def f(n):
    return random._os.system("id")
