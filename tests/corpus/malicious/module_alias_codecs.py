# attack: json.codecs is the codecs module (file access through codecs.open)
# expect: static.module-attr
import json
def f(n):
    return json.codecs.open("/etc/passwd").read()
