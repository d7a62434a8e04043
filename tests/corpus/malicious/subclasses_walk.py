# attack: __subclasses__ walk to a process launcher
# expect: static.dunder
def f(n):
    for c in ().__class__.__base__.__subclasses__():
        if c.__name__ == "Popen":
            return c(["id"])
