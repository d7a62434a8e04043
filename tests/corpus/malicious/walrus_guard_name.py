# attack: walrus binding a guard name
# expect: static.private-name
def f(n):
    return [(_getiter_ := i) for i in range(n)]
