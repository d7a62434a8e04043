# attack: **kwargs hides parameters
# expect: static.signature
def f(**kwargs):
    return kwargs
