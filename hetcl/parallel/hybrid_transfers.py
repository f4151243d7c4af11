"""The buffers of a hybrid step (hybrid.py) and the bytes it moves: device arrays per (device
position, name, shape) and pinned host staging arrays per name, each made once and reused, and
the count of bytes read from and uploaded to the devices in the current step."""
from ..backend.buffers import empty, pinned_empty


class Transfers:
    def __init__(self, devices):
        self.devices = devices
        self._host = {}  # name -> pinned host staging array
        self._buf = {}   # (device position, name, shape) -> DeviceArray
        self.bytes = 0   # bytes moved in the current step

    def array(self, pos, name, shape):
        key = (pos, name, tuple(shape))
        if key not in self._buf:
            self._buf[key] = empty(self.devices[pos], shape)
        return self._buf[key]

    def staging(self, name, shape):
        if name not in self._host or self._host[name].shape != tuple(shape):
            self._host[name] = pinned_empty(self.devices[0], shape)
        return self._host[name]

    def read(self, array, out):
        self.bytes += array.nbytes
        return array.get_async(out)

    def upload(self, array, host):
        self.bytes += array.nbytes
        array.set(host, wait=True)  # (blocking: the host staging arrays are reused)

    @staticmethod
    def wait(events):
        for event in events:
            event.wait()
