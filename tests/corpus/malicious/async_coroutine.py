# attack: coroutines expose cr_frame
# expect: static.async
async def g():
    return 1
def f(n):
    return g().cr_frame
