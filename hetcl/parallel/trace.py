"""A hook for the phases of every training step, for profiling tools (tools/profile_step.py):
pass a Tracer subclass to Runtime(tracer=...). The base class ignores everything, so the hook
costs a call per phase. Seconds are the host's wall-clock seconds of the phase.

phase(name, seconds, **info), by name:
  "step"      Runtime.step_on_devices: enqueueing the step on every device, waiting for the
              loss where not deferred, and the gradient exchange (info: measured)
  "exchange"  GradientExchange.reduce, the part of "step" that sums the gradients (measured)
  "sum"       one layer's sum enqueued on one device, within "exchange"
  "update"    Runtime.apply_update: the optimizer's kernels enqueued on every replica
  "batch sums" one batch norm sum across devices (batch_sums.py), within "step": the host
              waits for every device's part, adds them and uploads the total
exchanged(runs, times, firsts), after a measured exchange: the exchange's runs (comm._Run:
  device, reads, uploads, last_kernel), each device's (busy, transfer) seconds, and the first
  kernel event of each device's step (the start of its profiling clock for the step)
"""


class Tracer:
    def phase(self, name, seconds, **info):
        pass

    def exchanged(self, runs, times, firsts):
        pass
