"""One model on one device: its parameters, gradients and optimizer state there (replica.py), the
bound layers - each layer's kernels for one batch size (ops.py) - run in order by an Executor
(executor.py), and data sets kept on the devices (resident_sets.py)."""
