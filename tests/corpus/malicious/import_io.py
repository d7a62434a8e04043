# attack: import io
# expect: static.import
import io
def f(n):
    return io.open('/etc/passwd').read()
