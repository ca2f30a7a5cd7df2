"""Optimizer param groups and full-model gradient clipping."""
import torch
from detectron2.config import get_cfg

from part_d2.config import add_part_d2_config
from part_d2.solver.build import build_optimizer


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.GroupNorm(2, 4))
        self.query_embed = torch.nn.Embedding(5, 4)
        self.head = torch.nn.Linear(4, 2)


def _cfg(**kw):
    cfg = get_cfg()
    add_part_d2_config(cfg)
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.01
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    for k, v in kw.items():
        cfg.SOLVER.CLIP_GRADIENTS[k] = v
    return cfg


def test_param_groups_lr_and_decay():
    model = Tiny()
    opt = build_optimizer(_cfg(), model)
    assert isinstance(opt, torch.optim.AdamW)
    by_param = {id(g["params"][0]): g for g in opt.param_groups}
    g = lambda p: (round(by_param[id(p)]["lr"], 6), by_param[id(p)]["weight_decay"])  # noqa: E731
    assert g(model.backbone[0].weight) == (0.01, 0.05)
    assert g(model.backbone[1].weight) == (0.01, 0.0)  # norm
    assert g(model.query_embed.weight) == (0.1, 0.01)  # embedding
    assert g(model.head.weight) == (0.1, 0.05)


def test_full_model_clipping_bounds_global_norm():
    model = Tiny()
    opt = build_optimizer(_cfg(ENABLED=True, CLIP_TYPE="full_model", CLIP_VALUE=0.01), model)
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    opt.step()
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    assert abs(total.item() - 0.01) < 1e-6
