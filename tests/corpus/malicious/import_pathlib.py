# attack: import pathlib
# expect: static.import
import pathlib
def f(n):
    return pathlib.Path('/etc/passwd').read_text()
