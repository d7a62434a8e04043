# attack: import tempfile
# expect: static.import
import tempfile
def f(n):
    return tempfile.mkdtemp()
