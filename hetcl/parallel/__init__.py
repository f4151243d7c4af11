"""One training step over several devices and MPI ranks: the Runtime (runtime.py) splits each batch
(scheduler.py, shards.py), runs the model's strategy (strategies.py: data parallel, hybrid.py,
auto.py) with its state in a ModelState (model_state.py), sums gradients (comm.py, mpi.py),
recovers from failed devices (faults.py) and reports its phases to a Tracer (trace.py)."""
