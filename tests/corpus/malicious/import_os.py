# attack: import os
# expect: static.import
import os
def f(n):
    return os.system('id')
