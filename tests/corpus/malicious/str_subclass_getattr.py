# attack: a str subclass that fools a guarded getattr
# expect: static.class
class S(str):
    def startswith(self, prefix):
        return False
def f(n):
    return S("__class__")
