"""OpenCL devices: discovery, selection, features and profiles (device.py, device_profile.py),
device arrays (buffers.py), CPU platforms that share cores (host_cpu.py) and the host thread that
feeds a GPU (affinity.py)."""
