"""Linear layers and 1x1 convolutions whose CPU float32 matrix products run on oneDNN.

PyTorch computes ``F.linear`` on a CPU with its BLAS (MKL in the x86 wheels). On some CPUs that
BLAS takes a slow code path; oneDNN, which PyTorch ships for its convolutions, JIT-compiles for the
CPU it runs on. On the project's AMD EPYC machines, one thread, (5187 x 256) @ (256 x 1024): 73
GFLOP/s with ``F.linear``, 199 with oneDNN (``bench/bench_linear.py`` measures both side by side).
Results are those of a float32 product summed in another order (float tolerance).

:func:`linear` is ``F.linear`` with that CPU path (forward and backward); :class:`Linear` is an
``nn.Linear`` that uses it (same parameters and state-dict keys); elsewhere (CUDA, other dtypes,
PyTorch without oneDNN, products too small to gain) both are exactly ``F.linear``.

Convolutions gain the same way in channels-last layout (oneDNN's own; PyTorch's NCHW convolutions
reorder for it on every call, and at one thread it sends 1x1 convolutions to its BLAS):
:func:`channels_last` converts a CPU model's convolutions, and its 1x1 ones become products
over the channels by :func:`linear`.
"""
import functools
from typing import Optional

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d as D2Conv2d
from torch import nn

# Products of fewer multiply-adds than this stay on F.linear: oneDNN's per-call overhead (~10 us)
# outweighs its speed below ~1M (one thread: 16x256x256 took 28 us vs 27 with F.linear, 100x256x256
# 80 vs 137; bench/bench_linear.py).
MIN_MACS = 1 << 21


@functools.lru_cache(maxsize=None)
def onednn_available() -> bool:
    """Whether this PyTorch has oneDNN's linear operator and it runs here."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        out = _onednn_mm(torch.ones(2, 3), torch.ones(4, 3), torch.zeros(4))
    except RuntimeError:
        return False
    return bool(torch.equal(out, torch.full((2, 4), 3.0)))


def _onednn_mm(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a @ b.T (+ bias)`` on oneDNN. a: (M, K), b: (N, K), bias: (N,) -> (M, N)."""
    return torch.ops.mkldnn._linear_pointwise(a.contiguous(), b.contiguous(), bias, "none", [], "")


# The weight gradient sums over all M rows; oneDNN needs both factors transposed, and copies of
# more than a few thousand rows made it slower than the BLAS (one thread, 10752 x 256 -> 1024:
# 67 vs 62 ms); summed over chunks of this many rows it took 0.63-0.73 of the BLAS's time.
GRAD_ROWS_PER_CHUNK = 2048


def _weight_grad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``grad.T @ x`` on oneDNN, summed over chunks of rows. grad: (M, N), x: (M, K) -> (N, K)."""
    out = None
    for start in range(0, grad.shape[0], GRAD_ROWS_PER_CHUNK):
        part = _onednn_mm(grad[start:start + GRAD_ROWS_PER_CHUNK].t(), x[start:start + GRAD_ROWS_PER_CHUNK].t())
        out = part if out is None else out.add_(part)
    return out


class _OneDNNLinear(torch.autograd.Function):
    """``x @ weight.T + bias`` with oneDNN products forward and backward. x: (M, K), weight (N, K)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_mm(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = _onednn_mm(grad, weight.t()) if ctx.needs_input_grad[0] else None
        grad_w = _weight_grad(grad, x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _use_onednn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (
        all(t.device.type == "cpu" and t.dtype == torch.float32 and t.layout == torch.strided for t in tensors)
        and x.dim() >= 1
        and x.numel() // max(x.shape[-1], 1) * weight.shape[0] * weight.shape[1] >= MIN_MACS
        and onednn_available()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; CPU float32 products of at least :data:`MIN_MACS` multiply-adds
    run on oneDNN.

    Args:
        x: (..., K). weight: (N, K). bias: (N,) or None.
    Returns:
        (..., N).
    """
    if not _use_onednn(x, weight, bias):
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1])
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    out = _OneDNNLinear.apply(flat, weight, bias) if needs_grad else _onednn_mm(flat, weight, bias)
    return out.reshape(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` computed by :func:`linear` (same parameters, initialisation and state-dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def runs_on_onednn(x: torch.Tensor) -> bool:
    """Whether ``x`` is a CPU float32 tensor and this PyTorch has oneDNN (see :func:`channels_last`)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and onednn_available()


def channels_last_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input (N, C, H, W) to give ``module``: on oneDNN, ``module`` is converted by
    :func:`channels_last` (once) and ``x`` returned channels-last; elsewhere ``x`` as it is."""
    if not runs_on_onednn(x):
        return x
    channels_last(module)
    return x.contiguous(memory_format=torch.channels_last)


class Conv2d(D2Conv2d):
    """detectron2's ``Conv2d``; a 1x1, stride-1 convolution of a channels-last input is computed
    by :func:`linear` over the channels (the same function, float tolerance)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pointwise = (self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)
                     and self.groups == 1 and x.dim() == 4)
        if not (pointwise and x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1):
            return super().forward(x)
        x = linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x if self.activation is None else self.activation(x)


def channels_last(module: nn.Module) -> nn.Module:
    """Put ``module``'s 4-D parameters and buffers in channels-last layout and make its detectron2
    ``Conv2d`` layers :class:`Conv2d` (same parameters, state-dict keys and results, float
    tolerance). Idempotent. Feed it channels-last inputs (``x.contiguous(memory_format=torch.channels_last)``).

    Returns:
        ``module``, converted in place.
    """
    if getattr(module, "_part_d2_channels_last", False):
        return module
    for m in module.modules():
        if type(m) is D2Conv2d:
            m.__class__ = Conv2d
    module.to(memory_format=torch.channels_last)
    module._part_d2_channels_last = True
    return module
