# attack: except* ExceptionGroup type confusion
# expect: static.try-star
def f(n):
    try:
        raise ValueError(n)
    except* ValueError as eg:
        return eg
