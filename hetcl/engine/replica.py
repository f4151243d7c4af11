"""A model's state on one device: its parameters, gradients and optimizer state (Replica).
(Its data sets on the device: device_data.py.)"""
import numpy as np

from ..backend.buffers import base_align_elements, empty, packed_offsets, to_device
from ..errors import HetclError
from ..model.optim import split_key, state_key

# Where a layer's second gradient tensor starts in its region, in float32 elements (4 KiB).
# The same on every device and every MPI rank: the all-reduce adds the regions of different
# devices element by element, so their layouts must agree (devices' own sub-buffer
# alignments differ: 32 floats on PoCL, 128 on NVIDIA's driver).
GRAD_ALIGN = 1024


class Replica:
    def __init__(self, model, device, names=None):
        """names: only these parameters (hybrid.py keeps the dense layers elsewhere)."""
        self.model, self.device, self.names = model, device, names
        host = self._host(model.parameters())
        running = model.running_names()
        # params: every tensor a layer's kernels read, its running statistics included (those
        # packed in one region, with a second region to copy them aside: save_running);
        # grads: the trained ones
        self._running = self._packed(device, {k: v for k, v in host.items() if k in running})
        self.params = {k: self._running[0][k] if k in running else empty(device, v.shape)
                       for k, v in host.items()}
        self.grads, self._spans = self._grouped(
            device, {k: v for k, v in host.items() if k not in running})
        self.state = {}  # optimizer buffers {kind: {name: DeviceArray}}, e.g. "momentum"
        self.version = None
        self.sync(host)

    @staticmethod
    def _grouped(device, host):
        """Gradient buffers, one allocation per layer: its tensors (weight, bias) lie one after
        the other (each start aligned for a sub-buffer, the gaps zero), so the all-reduce moves
        and adds a layer in one command each instead of one per tensor (comm.py: on GPUs the
        host's commands limit a multi-GPU step). -> {name: array}, {layer name: (whole
        region, bytes of its tensors)}"""
        if GRAD_ALIGN % base_align_elements(device):
            raise HetclError(f"{device.name} needs sub-buffers aligned to "
                             f"{base_align_elements(device)} floats, more than hetcl's "
                             f"gradient layout ({GRAD_ALIGN}): please report this device")
        layers = {}
        for k in host:
            layers.setdefault(k.rsplit(".", 1)[0], []).append(k)
        grads, spans = {}, {}
        for layer, names in layers.items():
            region, arrays = _one_region(device, {k: host[k] for k in names}, GRAD_ALIGN)
            grads.update(arrays)
            spans[layer] = (region, sum(host[k].nbytes for k in names))
        return grads, spans

    @staticmethod
    def _packed(device, host):
        """Arrays for the host tensors as sub-buffers of one region, each start aligned for a
        sub-buffer, and a second region as large. -> ({name: array}, region, spare region);
        ({}, None, None) for none."""
        if not host:
            return {}, None, None
        region, arrays = _one_region(device, host, base_align_elements(device))
        return arrays, region, empty(device, region.shape)

    def save_running(self):
        """Copy the running statistics (batch norm's) aside, one command: a training step
        blends them in its forward pass, so a step redone after another device failed must
        start again from these values (restore_running), not blend them twice."""
        _, region, spare = self._running
        if region is not None:
            spare.copy_from(region)

    def restore_running(self):
        """The running statistics as save_running left them."""
        _, region, spare = self._running
        if region is not None:
            region.copy_from(spare)

    def grad_span(self, names):
        """(the gradients of a layer as one array, their own bytes), for the names of its
        parameters (e.g. "conv0.weight", "conv0.bias"; a replica holds whole layers)."""
        return self._spans[names[0].rsplit(".", 1)[0]]

    def sync(self, host=None):
        """Upload the host parameters if they changed since this replica last saw them."""
        if self.version == self.model.version:
            return
        host = self._host(host if host is not None else self.model.parameters())
        for k, v in host.items():
            self.params[k].set(v)
        self.save_running()  # (a step that syncs this replica may be redone: they start it)
        self.version = self.model.version

    def _host(self, params):
        return params if self.names is None else {k: params[k] for k in self.names}

    def download(self):
        return {k: v.get() for k, v in self.params.items()}


def _one_region(device, host, align):
    """One zeroed float32 region on the device holding the host tensors one after the other,
    each start a multiple of `align` elements. -> region, {name: sub-buffer array}"""
    offsets, end = packed_offsets([v.size for v in host.values()], align)
    region = empty(device, (end,)).fill(0.0)
    return region, {k: region.sub(at, v.shape) for (k, v), at in zip(host.items(), offsets)}


def state_on_host(state):
    """A holder's optimizer buffers {kind: {name: DeviceArray}} as one host dict keyed
    optim.state_key(kind, name)."""
    return {state_key(kind, name): a.get() for kind, buffers in state.items()
            for name, a in buffers.items()}


def state_on_device(device, flat, names=None):
    """Host optimizer buffers (state_on_host's form) as {kind: {name: DeviceArray}} on the
    device, for the parameters `names` only where given."""
    out = {}
    for key, value in flat.items():
        kind, name = split_key(key)
        if names is None or name in names:
            out.setdefault(kind, {})[name] = to_device(device, np.asarray(value, np.float32))
    return out
