# experiment only: flush a connection's writes at the end of its read
from twisted.internet import tcp
_orig = tcp.Connection.doRead
def doRead(self):
    r = _orig(self)
    if r is None and not self.TLS and self.connected and (self._tempDataBuffer or self.dataBuffer):
        r = self.doWrite()
    return r
tcp.Connection.doRead = doRead
