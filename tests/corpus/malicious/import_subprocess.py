# attack: import subprocess
# expect: static.import
import subprocess
def f(n):
    return subprocess.run(['id'])
