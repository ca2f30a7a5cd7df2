"""Optimizers: SGD or AdamW with a backbone LR multiplier, norm/embedding weight decay overrides
and detectron2's per-parameter or Mask2Former's full-model gradient clipping.

Parameters flagged with ``part_d2_sparse_grad`` (stage 3's per-object classifier rows with
``PART_DISTILLATION.SPARSE_CLASSIFIER_GRAD``) receive row-sparse COO gradients. SGD updates
them natively; AdamW updates them lazily, like ``torch.optim.SparseAdam``: only the rows present in
the gradient advance their moments and move, with AdamW's own update rule (bias corrections from the
parameter's step count, decoupled weight decay on those rows). Full-model clipping counts them.
"""
import itertools
import math
from typing import Any, Dict, Iterable, List

import torch
from detectron2.solver.build import maybe_add_gradient_clipping

NORM_TYPES = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.SyncBatchNorm,
    torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)
EMBED_PARAM_NAMES = ("relative_position_bias_table", "absolute_pos_embed")
NO_DECAY_ATTR = "part_d2_no_weight_decay"
SPARSE_GRAD_ATTR = "part_d2_sparse_grad"


def param_groups(cfg, model: torch.nn.Module) -> List[Dict[str, Any]]:
    """One group per parameter with its lr and weight decay.

    Backbone parameters get ``BACKBONE_MULTIPLIER`` × lr; normalisation parameters
    ``WEIGHT_DECAY_NORM``; embeddings (``nn.Embedding``, Swin's position tables)
    ``WEIGHT_DECAY_EMBED``; parameters flagged with ``part_d2_no_weight_decay`` no decay.
    """
    s = cfg.SOLVER
    groups, seen = [], set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or p in seen:
                continue
            seen.add(p)
            lr, wd = s.BASE_LR, s.WEIGHT_DECAY
            if module_name.startswith("backbone") or ".backbone." in f".{module_name}.":
                lr = lr * s.BACKBONE_MULTIPLIER
            if "bias" in name and s.BIAS_LR_FACTOR != 1.0:
                lr = lr * s.BIAS_LR_FACTOR
            if isinstance(module, NORM_TYPES):
                wd = s.WEIGHT_DECAY_NORM
            if isinstance(module, torch.nn.Embedding) or name in EMBED_PARAM_NAMES:
                wd = s.WEIGHT_DECAY_EMBED
            if getattr(p, NO_DECAY_ATTR, False):
                wd = 0.0
            groups.append({"params": [p], "lr": lr, "weight_decay": wd})
    return groups


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float, eps: float = 1e-6) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` (L2) that also accepts sparse COO gradients.

    Returns:
        the total L2 norm of the gradients before clipping (0-dim tensor).
    """
    params = [p for p in params if p.grad is not None]
    if not any(p.grad.is_sparse for p in params):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)  # torch's fused multi-tensor path
    grads = []
    for p in params:
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()  # the norm of uncoalesced values is not the gradient's norm
            grads.append(p.grad._values())
        else:
            grads.append(p.grad)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))
    coef = torch.clamp(max_norm / (total + eps), max=1.0)
    for g in grads:
        g.detach().mul_(coef.to(g.dtype))
    return total


def _with_full_model_clipping(optim_cls, max_norm: float):
    """An optimizer class whose ``step`` first clips the global gradient norm of all params."""

    class FullModelClipped(optim_cls):
        def step(self, closure=None):
            clip_grad_norm(itertools.chain(*[g["params"] for g in self.param_groups]), max_norm)
            return super().step(closure=closure)

    FullModelClipped.__name__ = f"FullModelClipped{optim_cls.__name__}"
    return FullModelClipped


@torch.no_grad()
def lazy_adamw_step(param: torch.Tensor, grad: torch.Tensor, state: Dict[str, Any], group: Dict[str, Any]) -> None:
    """One AdamW step on the rows of ``param`` present in the sparse COO ``grad``.

    Args:
        param: (N, ...) parameter, updated in place on the present rows only.
        grad: sparse COO gradient of ``param`` with sparse dimension 1 (rows).
        state: the optimizer's state of ``param`` (``step``, ``exp_avg``, ``exp_avg_sq``: dense).
        group: its param group (``lr``, ``betas``, ``eps``, ``weight_decay``).
    """
    if group.get("amsgrad") or group.get("maximize"):
        raise ValueError("sparse classifier gradients support AdamW without amsgrad or maximize")
    grad = grad.coalesce()
    rows, values = grad.indices()[0], grad.values()
    if not state:
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    state["step"] += 1
    step = float(state["step"])
    beta1, beta2 = group["betas"]
    lr = float(group["lr"])
    m = state["exp_avg"][rows].mul_(beta1).add_(values, alpha=1 - beta1)
    v = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
    state["exp_avg"][rows] = m
    state["exp_avg_sq"][rows] = v
    denom = (v.sqrt() / math.sqrt(1 - beta2**step)).add_(group["eps"])
    p = param[rows].mul_(1 - lr * group["weight_decay"])
    param[rows] = p.addcdiv_(m, denom, value=-lr / (1 - beta1**step))


def _with_lazy_sparse_rows(optim_cls):
    """An AdamW class that applies :func:`lazy_adamw_step` to parameters with sparse gradients and
    its own step to the others."""

    class LazySparseRows(optim_cls):
        def step(self, closure=None):
            sparse = []
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None and p.grad.is_sparse:
                        sparse.append((p, p.grad, group))
                        p.grad = None
            try:
                loss = super().step(closure=closure)
            finally:
                for p, grad, _ in sparse:
                    p.grad = grad
            for p, grad, group in sparse:
                lazy_adamw_step(p, grad, self.state[p], group)
            return loss

    LazySparseRows.__name__ = f"LazySparseRows{optim_cls.__name__}"
    return LazySparseRows


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` ("SGD" | "ADAMW") over :func:`param_groups`, with gradient clipping."""
    s = cfg.SOLVER
    name = s.OPTIMIZER.upper()
    if name == "SGD":
        cls, kwargs = torch.optim.SGD, {"momentum": s.MOMENTUM, "nesterov": s.NESTEROV}
    elif name == "ADAMW":
        cls, kwargs = torch.optim.AdamW, {}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER={s.OPTIMIZER!r}; expected 'SGD' or 'ADAMW'")
    clip = s.CLIP_GRADIENTS
    sparse = [n for n, p in model.named_parameters() if p.requires_grad and getattr(p, SPARSE_GRAD_ATTR, False)]
    if sparse and clip.ENABLED and clip.CLIP_TYPE != "full_model":
        raise ValueError(
            f"parameters {sparse} get sparse gradients, which detectron2's per-parameter clipping "
            f"(SOLVER.CLIP_GRADIENTS.CLIP_TYPE={clip.CLIP_TYPE!r}) cannot clip; use 'full_model' or "
            "PART_DISTILLATION.SPARSE_CLASSIFIER_GRAD False"
        )
    if sparse and name == "ADAMW":
        cls = _with_lazy_sparse_rows(cls)
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        cls = _with_full_model_clipping(cls, clip.CLIP_VALUE)
    elif clip.ENABLED:
        cls = maybe_add_gradient_clipping(cfg, cls)
    return cls(param_groups(cfg, model), lr=s.BASE_LR, **kwargs)
