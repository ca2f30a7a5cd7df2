"""Optimizers: SGD or AdamW with a backbone LR multiplier, norm/embedding weight decay overrides
and detectron2's per-parameter or Mask2Former's full-model gradient clipping."""
import itertools
from typing import Any, Dict, List

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


def _with_full_model_clipping(optim_cls, max_norm: float):
    """An optimizer class whose ``step`` first clips the global gradient norm of all params."""

    class FullModelClipped(optim_cls):
        def step(self, closure=None):
            params = itertools.chain(*[g["params"] for g in self.param_groups])
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return super().step(closure=closure)

    FullModelClipped.__name__ = f"FullModelClipped{optim_cls.__name__}"
    return FullModelClipped


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
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        cls = _with_full_model_clipping(cls, clip.CLIP_VALUE)
    elif clip.ENABLED:
        cls = maybe_add_gradient_clipping(cfg, cls)
    return cls(param_groups(cfg, model), lr=s.BASE_LR, **kwargs)
