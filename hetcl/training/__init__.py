"""The training loop behind `hetcl train` / `hetcl evaluate` (train.py): data sets (data.py), the
run's configuration and directory (run_config.py, run_store.py, rundir.py), checkpoints
(checkpoint.py), Ctrl-C (interrupts.py) and metrics (metrics.py)."""
