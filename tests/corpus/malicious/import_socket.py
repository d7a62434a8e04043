# attack: import socket
# expect: static.import
import socket
def f(n):
    return socket.socket()
