# attack: frames via a traceback
# expect: static.dunder
def f(n):
    try:
        1 / 0
    except ZeroDivisionError as e:
        return e.__traceback__.tb_frame.f_globals
