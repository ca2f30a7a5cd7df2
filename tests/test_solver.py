"""Optimizer param groups, full-model gradient clipping and lazy AdamW on sparse gradients."""
import pytest
import torch
from detectron2.config import get_cfg

from part_d2.config import add_part_d2_config
from part_d2.solver.build import SPARSE_GRAD_ATTR, build_optimizer, clip_grad_norm


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


def _sparse_rows(grad: torch.Tensor, rows) -> torch.Tensor:
    """The rows ``rows`` of a dense (N, C) gradient as an uncoalesced COO tensor (row 0 split in two)."""
    idx = torch.tensor(list(rows) + [rows[0]])
    values = grad[idx].clone()
    values[0] *= 0.25
    values[-1] *= 0.75
    return torch.sparse_coo_tensor(idx[None], values, grad.shape, check_invariants=True)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_lazy_adamw_equals_adamw_when_every_row_is_present(weight_decay):
    torch.manual_seed(0)
    dense = torch.nn.Linear(3, 4)
    sparse = torch.nn.Linear(3, 4)
    sparse.load_state_dict(dense.state_dict())
    setattr(sparse.weight, SPARSE_GRAD_ATTR, True)
    cfg = _cfg()
    cfg.SOLVER.WEIGHT_DECAY = weight_decay
    opt_dense, opt_sparse = build_optimizer(cfg, dense), build_optimizer(cfg, sparse)
    for _ in range(3):
        g = torch.randn(4, 3)
        dense.weight.grad, dense.bias.grad = g.clone(), torch.ones(4)
        sparse.weight.grad, sparse.bias.grad = _sparse_rows(g, [0, 1, 2, 3]), torch.ones(4)
        opt_dense.step()
        opt_sparse.step()
        assert sparse.weight.grad.is_sparse  # restored after the step
    torch.testing.assert_close(sparse.weight, dense.weight)
    torch.testing.assert_close(
        opt_sparse.state[sparse.weight]["exp_avg_sq"], opt_dense.state[dense.weight]["exp_avg_sq"]
    )


def test_lazy_adamw_leaves_absent_rows_and_their_moments_alone():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 5)
    setattr(model.weight, SPARSE_GRAD_ATTR, True)
    opt = build_optimizer(_cfg(), model)
    before = model.weight.detach().clone()
    model.weight.grad = _sparse_rows(torch.randn(5, 3), [1, 3])
    opt.step()
    moved = (model.weight.detach() != before).any(1).nonzero().flatten().tolist()
    assert moved == [1, 3]
    assert opt.state[model.weight]["exp_avg"][[0, 2, 4]].abs().sum() == 0


def test_clipping_with_sparse_gradients_equals_dense_clipping():
    torch.manual_seed(0)
    g = torch.randn(6, 2)
    dense = [torch.nn.Parameter(torch.zeros(6, 2)), torch.nn.Parameter(torch.zeros(3))]
    sparse = [torch.nn.Parameter(torch.zeros(6, 2)), torch.nn.Parameter(torch.zeros(3))]
    rows_only = torch.zeros_like(g)
    rows_only[[1, 4]] = g[[1, 4]]
    dense[0].grad, dense[1].grad = rows_only, torch.full((3,), 2.0)
    sparse[0].grad, sparse[1].grad = _sparse_rows(g, [1, 4]), torch.full((3,), 2.0)
    total_dense = torch.nn.utils.clip_grad_norm_(dense, 0.5)
    total_sparse = clip_grad_norm(sparse, 0.5)
    torch.testing.assert_close(total_sparse, total_dense)
    torch.testing.assert_close(sparse[0].grad.to_dense(), dense[0].grad)
    torch.testing.assert_close(sparse[1].grad, dense[1].grad)
