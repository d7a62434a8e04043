# attack: a default argument reads a host file
# expect: static.builtin
def f(n, data=open("/etc/passwd").read()):
    return data
