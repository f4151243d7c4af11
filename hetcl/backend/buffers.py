"""Device arrays: a cl.Buffer with a shape and dtype, numpy in and out.

Host<->device copies are blocking unless an event is asked for. Where the device shares memory
with the host (features["unified_memory"]) the buffer is allocated by the driver in host-visible
memory (ALLOC_HOST_PTR), which PoCL and integrated GPUs map without a copy.
"""
import numpy as np
import pyopencl as cl


class DeviceArray:
    def __init__(self, device, shape, dtype=np.float32):
        self.device = device
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        flags = cl.mem_flags.READ_WRITE
        if device.features["unified_memory"]:
            flags |= cl.mem_flags.ALLOC_HOST_PTR
        # OpenCL forbids zero-byte buffers; a 1-element allocation stands in for an empty array.
        self.buffer = cl.Buffer(device.context, flags, max(self.nbytes, self.dtype.itemsize))

    def view(self, shape):
        """The same memory seen with another shape (Flatten): no copy, no new buffer."""
        out = DeviceArray.__new__(DeviceArray)
        out.device, out.dtype, out.buffer = self.device, self.dtype, self.buffer
        out.shape = tuple(int(s) for s in shape)
        out.nbytes = int(np.prod(out.shape, dtype=np.int64)) * self.dtype.itemsize
        if out.nbytes != self.nbytes:
            raise ValueError(f"cannot view {self.shape} as {out.shape}")
        return out

    def sub(self, offset, shape, dtype=None):
        """Elements [offset, ...) as an array of its own of `shape` (an OpenCL sub-buffer: the
        same memory), of `dtype` (default: this array's). offset counts this array's elements;
        offset * itemsize must be a multiple of the device's base-address alignment
        (base_align_elements)."""
        out = DeviceArray.__new__(DeviceArray)
        out.device, out.dtype = self.device, np.dtype(dtype or self.dtype)
        out.shape = tuple(int(s) for s in shape)
        out.nbytes = int(np.prod(out.shape, dtype=np.int64)) * out.dtype.itemsize
        start = int(offset) * self.dtype.itemsize
        if start + out.nbytes > self.nbytes:
            raise ValueError(f"{out.shape} at element {offset} runs past {self.shape}")
        out.buffer = self.buffer.get_sub_region(start, max(out.nbytes, out.dtype.itemsize))
        return out

    @property
    def size(self):
        return self.nbytes // self.dtype.itemsize

    def set(self, array, wait=True, queue=None, wait_for=None):
        array = np.ascontiguousarray(array, dtype=self.dtype)
        if array.shape != self.shape:
            raise ValueError(f"shape {array.shape} does not match device array {self.shape}")
        if self.nbytes == 0:
            return None
        return cl.enqueue_copy(queue or self.device.queue, self.buffer, array, is_blocking=wait,
                               wait_for=wait_for)

    def copy_from(self, other):
        """Enqueue a copy of another array of as many bytes on this device (non-blocking)."""
        if other.nbytes != self.nbytes:
            raise ValueError(f"{other.nbytes} bytes do not fit an array of {self.nbytes}")
        if self.nbytes:
            cl.enqueue_copy(self.device.queue, self.buffer, other.buffer)

    def get(self, out=None):
        out = np.empty(self.shape, self.dtype) if out is None else out
        if self.nbytes:
            cl.enqueue_copy(self.device.queue, out, self.buffer, is_blocking=True)
        return out

    def get_async(self, out, wait_for=None, queue=None):
        """Non-blocking read into ``out`` (kept alive by the caller); returns the event."""
        return cl.enqueue_copy(queue or self.device.queue, out, self.buffer, is_blocking=False,
                               wait_for=wait_for)

    def fill(self, value):
        """Set every element (blocking). Written as an upload rather than clEnqueueFillBuffer:
        fills are one-off (optimizer state, test poisoning), and memory checkers such as
        Oclgrind do not count a fill as initialising the buffer."""
        if self.nbytes:
            self.set(np.full(self.shape, value, self.dtype))
        return self

def base_align_elements(device, dtype=np.float32):
    """Where a sub-buffer may start: the device's CL_DEVICE_MEM_BASE_ADDR_ALIGN (in bits), in
    elements of dtype (e.g. 128 floats on NVIDIA's driver)."""
    return max(1, device.cl_device.mem_base_addr_align // 8 // np.dtype(dtype).itemsize)


def packed_offsets(sizes, align):
    """Parts of `sizes` elements laid one after the other, each start a multiple of `align`
    elements (a sub-buffer start: base_align_elements). -> (offsets, end of the last part)"""
    offsets, end = [], 0
    for size in sizes:
        offsets.append(-(-end // align) * align)
        end = offsets[-1] + int(size)
    return offsets, end


def to_device(device, array, dtype=None):
    array = np.ascontiguousarray(array, dtype=dtype or np.asarray(array).dtype)
    out = DeviceArray(device, array.shape, array.dtype)
    out.set(array)
    return out


def empty(device, shape, dtype=np.float32):
    return DeviceArray(device, shape, dtype)


def pinned_empty(device, shape, dtype=np.float32):
    """A numpy array in page-locked host memory (a mapped ALLOC_HOST_PTR buffer of the device's
    context), for staging copies: the driver can DMA to and from it directly, where pageable
    memory goes through a bounce buffer. The array stays mapped for its lifetime (its base, a
    pyopencl MemoryMap, holds the buffer)."""
    dtype = np.dtype(dtype)
    nbytes = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, dtype.itemsize)
    buf = cl.Buffer(device.context, cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR,
                    nbytes)
    array, _ = cl.enqueue_map_buffer(device.queue, buf, cl.map_flags.READ | cl.map_flags.WRITE,
                                     0, tuple(shape), dtype, is_blocking=True)
    return array
