"""Optimizers for models whose steps touch a few rows of large tables."""

import math

import torch

__all__ = ["LazyAdam", "adam", "load_state"]


def adam(params, lr, weight_decay=0.0):
    """``torch.optim.Adam``, fused into one kernel where this torch has one
    for the parameters' device (CUDA; the CPU since torch 2.4): the same
    update, without a loop over the parameters in Python (timings in
    ``benchmarks/RESULTS.md``)."""
    params = list(params)
    devices = {param.device.type for param in params}
    fused = devices == {"cuda"} or (devices == {"cpu"} and torch.__version__ >= "2.4")
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def load_state(optimizer, state):
    """``optimizer.load_state_dict(state)``, the optimizer keeping its own
    choice of kernel. torch copies a saved group's ``fused`` flag over the
    new one's, so a state saved where Adam ran fused (CUDA, a newer torch)
    would ask a CPU or an older torch, after a pickle moved the model there,
    for a kernel it lacks."""
    groups = [dict(saved, fused=own["fused"]) if "fused" in own else saved
              for saved, own in zip(state["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({**state, "param_groups": groups})


class LazyAdam(torch.optim.Optimizer):
    """Adam that moves, at each step, only the rows a sparse gradient touches.

    For a parameter with a sparse gradient (``nn.Embedding(sparse=True)``,
    ``F.embedding_bag(..., sparse=True)``), the rows the gradient names get
    Adam's update and their moments advance; every other row, and its
    moments, stay as they were ("lazy" Adam: the rule of torch's
    ``SparseAdam``, bias corrections by the parameter's step count). A
    parameter with a dense gradient gets ``torch.optim.Adam``'s update
    whole. One optimizer serves a model of both kinds of parameters.

    The arithmetic is SparseAdam's, done on the touched rows by
    ``index_select``/``index_copy_``/``index_add_`` instead of sparse tensor
    algebra, which avoids building and coalescing sparse tensors at every
    step (timings in ``benchmarks/RESULTS.md``).

    Parameters
    ----------
    params : iterable of tensors or parameter groups
    lr : float
        Step size.
    betas : (float, float), default=(0.9, 0.999)
        Decay of the first and second moment estimates.
    eps : float, default=1e-8
        Added to the denominator.

    References
    ----------
    .. [1] Kingma, D. P. and Ba, J. "Adam: A method for stochastic
       optimization." ICLR 2015.
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                first_correction = 1 - beta1 ** state["step"]
                second_correction = 1 - beta2 ** state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                if param.grad.is_sparse:
                    grad = param.grad.coalesce()  # one entry per row: duplicates summed
                    rows, values = grad.indices()[0], grad.values()
                    if not len(rows):
                        continue
                    first = exp_avg.index_select(0, rows).lerp_(values, 1 - beta1)
                    second = exp_avg_sq.index_select(0, rows).mul_(beta2).addcmul_(
                        values, values, value=1 - beta2)
                    exp_avg.index_copy_(0, rows, first)
                    exp_avg_sq.index_copy_(0, rows, second)
                    # SparseAdam's form: eps added before the bias correction. The
                    # rows are distinct (coalesced), so they are read, moved and
                    # written back, cheaper than index_add_'s accumulation.
                    change = first.div_(second.sqrt_().add_(group["eps"]))
                    moved = param.index_select(0, rows).add_(change, alpha=-group["lr"] * math.sqrt(
                        second_correction) / first_correction)
                    param.index_copy_(0, rows, moved)
                else:
                    grad = param.grad
                    exp_avg.lerp_(grad, 1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    denominator = (exp_avg_sq / second_correction).sqrt_().add_(group["eps"])
                    param.addcdiv_(exp_avg, denominator, value=-group["lr"] / first_correction)
        return loss
