# attack: import shutil
# expect: static.import
import shutil
def f(n):
    return shutil.rmtree('/tmp')
