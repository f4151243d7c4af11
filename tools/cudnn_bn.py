"""Batch-norm rows of tools/cudnn_compare.py: each distinct BatchNorm2D of the --models (by input
shape and fused activation), hetcl's BatchNormOp against PyTorch's batch norm on the same GPU.

Three timings per row, as per-call medians: the training forward (batch statistics, running
statistics update, normalisation, fused ReLU), the training backward (dx, dgamma, dbeta - one
column: PyTorch's backward is one call for all three, and dx needs the same per-channel sums as
dgamma and dbeta, so a data/filter split would not compare like with like) and the evaluation
forward (running statistics). PyTorch: aten._batch_norm_impl_index, which is F.batch_norm's own
dispatch (cuDNN's kernel or ATen's native one, as PyTorch picks; the row names which), then
F.relu; backward aten.threshold_backward + aten._batch_norm_impl_index_backward (autograd's
backward of the same call); evaluation F.batch_norm(training=False) + F.relu.
"""
import sys

import numpy as np

from cudnn_compare import cl_time, cuda_time, distinct_nodes, label, rel, shape_text

OUTPUTS = ("y", "dx", "dgamma", "dbeta", "running_mean", "running_var", "y_eval")
KERNELS = {0: "ATen native", 1: "cuDNN", 2: "MIOpen"}  # _batch_norm_impl_index's impl index


def bn_inputs(rng, layer, n):
    """x (channels off centre and scale), parameters and running statistics away from their
    initial 1/0/0/1, dy."""
    c = layer.num_features
    shape = (n,) + tuple(layer.input_shape)
    centre = (rng.standard_normal(c) * 0.5).reshape((1, c) + (1,) * (len(shape) - 2))
    x = (rng.standard_normal(shape) * 2 + centre).astype(np.float32)
    prm = {"weight": 1 + 0.1 * rng.standard_normal(c), "bias": 0.1 * rng.standard_normal(c),
           "running_mean": 0.1 * rng.standard_normal(c),
           "running_var": rng.uniform(0.5, 1.5, c)}
    prm = {k: v.astype(np.float32) for k, v in prm.items()}
    return x, prm, rng.standard_normal(shape).astype(np.float32)


def drain(gen):
    """Run a BatchNormOp pass (a generator); one device yields no sums to all-reduce."""
    for _ in gen:
        raise RuntimeError("BatchNormOp yielded sums with StepContext.sums None")


def hetcl_bn(device, node, x, prm, dy):
    """-> (train_fwd, bwd, eval_fwd) closures and {OUTPUTS name: array} of hetcl's batch norm
    (training on one device: StepContext(global_n=n); evaluation: step None). The training
    forward moves its running statistics each call; evaluation has its own copy of them."""
    from hetcl.backend.buffers import empty, to_device
    from hetcl.engine.executor import StepContext
    n = x.shape[0]
    op = node.layer.bind(device, n, act=node.act)
    step = StepContext(global_n=n)
    xs, dyd = [to_device(device, x)], to_device(device, dy)
    p = {k: to_device(device, v) for k, v in prm.items()}
    p_eval = {k: to_device(device, v) for k, v in prm.items()}
    g = {k: empty(device, prm[k].shape) for k in ("weight", "bias")}
    y, dx, y_eval = (empty(device, x.shape) for _ in range(3))

    fwd = lambda: drain(op.forward(xs, y, p, step))  # noqa: E731
    bwd = lambda: drain(op.backward(xs, y, dyd, [dx], p, g, step))  # noqa: E731
    ev = lambda: drain(op.forward(xs, y_eval, p_eval, None))  # noqa: E731
    fwd()
    bwd()
    out = dict(y=y.get(), dx=dx.get(), dgamma=g["weight"].get(), dbeta=g["bias"].get(),
               running_mean=p["running_mean"].get(), running_var=p["running_var"].get())
    ev()  # last: it overwrites the scale and shift that the training backward reads
    out["y_eval"] = y_eval.get()
    return (fwd, bwd, ev), out


def torch_bn_fns(torch, node, X, prm, DY):
    """-> (train_fwd, bwd, eval_fwd) closures, {OUTPUTS name: array} and the name of the
    kernel PyTorch picked, for tensors on X's device (prm: {name: tensor} as hetcl's)."""
    F, aten = torch.nn.functional, torch.ops.aten
    layer, relu = node.layer, node.act == "relu"
    W, B = prm["weight"], prm["bias"]
    RM, RV = prm["running_mean"].clone(), prm["running_var"].clone()  # training's, updated
    act = F.relu if relu else (lambda z: z)

    def fwd():
        res = aten._batch_norm_impl_index(X, W, B, RM, RV, True, layer.momentum, layer.eps,
                                          torch.backends.cudnn.enabled)
        return act(res[0]), res

    Y, (_, mean, invstd, reserve, impl) = fwd()

    def bwd():
        dz = aten.threshold_backward(DY, Y, 0) if relu else DY
        return aten._batch_norm_impl_index_backward(
            impl, X, dz, W, RM, RV, mean, invstd, True, layer.eps, [True, True, True], reserve)

    ev = lambda: act(F.batch_norm(X, prm["running_mean"], prm["running_var"], W, B,  # noqa: E731
                                  False, layer.momentum, layer.eps))
    dx, dgamma, dbeta = bwd()
    out = dict(y=Y, dx=dx, dgamma=dgamma, dbeta=dbeta, running_mean=RM, running_var=RV,
               y_eval=ev())
    out = {k: v.detach().cpu().numpy() for k, v in out.items()}
    return (fwd, bwd, ev), out, KERNELS.get(impl, f"impl {impl}")


def bn_rows(torch, device, args):
    """The batch-norm rows: dicts with model, layer, shape, act, kernel, hetcl/cudnn =
    (train fwd, bwd, eval fwd) seconds, errs (relative, in OUTPUTS' order)."""
    from hetcl.model.batchnorm import BatchNorm1D, BatchNorm2D
    from hetcl.model.models import MODELS as BUILDERS
    rows, rng = [], np.random.default_rng(1)
    for name in args.models:
        model = BUILDERS[name](seed=0).build()
        for node, count in distinct_nodes(model, (BatchNorm1D, BatchNorm2D)):
            x, prm, dy = bn_inputs(rng, node.layer, args.batch)
            fns_h, ours = hetcl_bn(device, node, x, prm, dy)
            X, DY = torch.from_numpy(x).cuda(), torch.from_numpy(dy).cuda()
            fns_t, ref, kernel = torch_bn_fns(
                torch, node, X, {k: torch.from_numpy(v).cuda() for k, v in prm.items()}, DY)
            t_h = tuple(cl_time(device, f, args.iters, args.reps) for f in fns_h)
            t_c = tuple(cuda_time(torch, f, args.iters, args.reps) for f in fns_t)
            rows.append(dict(model=name, layer=label(node, count), act=node.act, kernel=kernel,
                             shape=shape_text(x.shape, node.layer.output_shape),
                             hetcl=t_h, cudnn=t_c, errs=[rel(ours[k], ref[k]) for k in OUTPUTS]))
            print(f"  {name} {node.layer.name}: done", file=sys.stderr, flush=True)
    return rows
