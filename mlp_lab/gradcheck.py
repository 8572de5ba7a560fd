"""``mlp-lab gradcheck``: the seed's "backprop ninja" table.

With hand-written gradients (``Model.forward_backward``), each one is compared with autograd's on
the same forward pass: exact, approximate (``torch.allclose`` defaults), max absolute difference.
Without them, autograd is compared with central finite differences in float64 on sampled entries.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

import torch

from mlp_lab.data import Batch, load
from mlp_lab.options import Hyperparams
from mlp_lab.registry import Implementation


@dataclass
class Row:
    name: str
    exact: bool
    approximate: bool
    max_diff: float


def _seeded(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def hand_written(model, batch: Batch) -> list[Row]:  # noqa: ANN001
    """Hand-written gradients against autograd's, parameters and exposed activations alike."""
    params = model.parameters()
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    loss, activations, grads = model.forward_backward(batch)
    for a in activations.values():
        a.retain_grad()
    loss.backward()
    rows = []
    for name, mine in grads.items():
        ref = params[name].grad if name in params else activations[name].grad
        mine = mine.detach()
        if ref is None:  # the loss does not depend on it: autograd's gradient is zero
            ref = torch.zeros_like(mine)
        rows.append(Row(name, bool(torch.equal(mine, ref)), bool(torch.allclose(mine, ref)), (mine - ref).abs().max().item()))
    return rows


def finite_differences(model, batch: Batch, seed: int, entries: int, eps: float = 1e-6) -> list[Row]:  # noqa: ANN001
    """Autograd against central finite differences in float64, on ``entries`` sampled entries per tensor."""
    model.to(dtype=torch.float64)
    batch = Batch(batch.x.double(), batch.y, batch.onehot.double())
    params = model.parameters()

    def loss() -> torch.Tensor:
        _seeded(seed)  # the same dropout masks, or any other randomness, for every evaluation
        return model.loss(batch)

    for p in params.values():
        p.requires_grad_(True)
    grads = torch.autograd.grad(loss(), list(params.values()), allow_unused=True)
    pick = torch.Generator().manual_seed(seed)
    rows = []
    for (name, p), g in zip(params.items(), grads, strict=True):
        g = torch.zeros_like(p) if g is None else g
        idx = torch.randperm(p.numel(), generator=pick)[:entries]
        numeric = torch.empty(len(idx), dtype=torch.float64)
        with torch.no_grad():
            flat = p.view(-1)
            for j, i in enumerate(idx.tolist()):
                orig = flat[i].item()
                flat[i] = orig + eps
                up = loss().item()
                flat[i] = orig - eps
                down = loss().item()
                flat[i] = orig
                numeric[j] = (up - down) / (2 * eps)
        analytic = g.reshape(-1)[idx].detach()
        rows.append(
            Row(
                f"{name} ({len(idx)}/{p.numel()})",
                bool(torch.equal(analytic, numeric)),
                bool(torch.allclose(analytic, numeric, rtol=1e-4, atol=1e-6)),
                (analytic - numeric).abs().max().item(),
            )
        )
    return rows


def run(impl: Implementation, hp: Hyperparams, samples: int, seed: int, entries: int) -> int:
    """Print the table for ``impl``; 0 when every gradient is approximately equal, else 1."""
    from rich.console import Console
    from rich.table import Table

    model_class = impl.model_class()
    data = load("default")
    batch = Batch(data.train.x[:samples], data.train.y[:samples], data.train.onehot[:samples])
    _seeded(seed)
    model = model_class(hp)
    if model_class.has_hand_written_gradients():
        title, rows = f"{impl.name}: hand-written gradients vs autograd ({samples} samples)", hand_written(model, batch)
    else:
        title = f"{impl.name}: autograd vs finite differences, float64 ({samples} samples)"
        rows = finite_differences(model, batch, seed, entries)
    table = Table(title=title, title_justify="left")
    for col in ("tensor", "exact", "approximate", "max diff"):
        table.add_column(col, justify="right" if col == "max diff" else "left")
    for r in rows:
        table.add_row(r.name, str(r.exact), str(r.approximate), f"{r.max_diff:.3e}", style=None if r.approximate else "red")
    Console(file=sys.stdout).print(table)
    bad = [r.name for r in rows if not r.approximate]
    if bad:
        print(f"Gradient mismatch in: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"All {len(rows)} gradients match.")
    return 0
