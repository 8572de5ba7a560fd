"""``mlp-lab gradcheck``: the seed's "backprop ninja" table.

With hand-written gradients (``Model.forward_backward``), each one is compared with autograd's on
the same forward pass: exact, approximate (:func:`close`), max absolute difference.
Without them, autograd is compared with central finite differences in float64 on sampled entries.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass

import torch

from mlp_lab.data import Batch, load
from mlp_lab.errors import PluginError, UsageError, described_where
from mlp_lab.model import checked_parameters, refusal
from mlp_lab.options import Hyperparams
from mlp_lab.registry import Implementation


@dataclass
class Row:
    name: str
    exact: bool
    approximate: bool
    max_diff: float


def close(mine: torch.Tensor, ref: torch.Tensor) -> bool:
    """The notebook's ``torch.allclose``, with the absolute tolerance scaled to the gradient's largest entry.

    A weight gradient sums over the batch (``x.T @ dz``): float32 rounding leaves about 1e-7 of the
    largest entry in any entry, so an entry near zero misses ``allclose``'s fixed ``atol=1e-8``
    though the code is right. Within 1e-5 of the largest entry (1e-5 relative, as ``allclose``)
    is about 80 float32 roundings; a wrong formula misses by orders of magnitude more. So entries
    under 1e-5 of the largest are checked to that precision only. The scale comes from the finite
    entries; an infinite or NaN one must be matched exactly.
    """
    finite = ref[ref.isfinite()]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    return bool(torch.allclose(mine, ref, rtol=1e-5, atol=max(1e-8, 1e-5 * scale), equal_nan=True))


def _seeded(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def at_random_weights(model, owner: str = "the model") -> None:  # noqa: ANN001
    """Draw every parameter anew from a normal of std 1/sqrt(its largest dimension), as the notebook's
    check draws ``randn`` weights: a seed's tiny init (std 0.001) keeps tanh' at 1 everywhere, where
    a forgotten or misplaced derivative cannot show. Uses torch's generator (seed it first)."""
    with torch.no_grad():
        for p in checked_parameters(model, owner).values():
            if p.is_floating_point():
                p.normal_(0.0, 1 / math.sqrt(max(p.shape, default=1)))


def hand_written(
    model,  # noqa: ANN001
    batch: Batch,
    owner: str = "the model",
    random_weights: bool = True,
    hints: list[str] | None = None,
) -> list[Row]:
    """Hand-written gradients against autograd's, parameters and exposed activations alike, at random
    weights (:func:`at_random_weights`) unless ``random_weights`` is false (the model's own).

    A parameter without a hand-written gradient is a failed row, and so is a gradient autograd
    finds NaN or infinite (a parameter that must stay positive, drawn negative?); a gradient named
    after neither a parameter nor an activation, or a loss autograd cannot differentiate, a
    :class:`PluginError`. Where gradients differ, ``hints`` (if given) gets what the mismatches suggest
    (:func:`hints_for`).
    """
    if random_weights:
        at_random_weights(model, owner)
    params = checked_parameters(model, owner)
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    loss, activations, grads = model.forward_backward(batch)
    unknown = [name for name in grads if name not in params and name not in activations]
    if unknown:
        known = ", ".join([*params, *activations])
        raise PluginError(
            f"{owner}: forward_backward returned gradients for {', '.join(unknown)}, neither parameters nor activations"
            f" (those are {known})"
        )
    for kind, tensors in (("activations", activations), ("grads", grads)):
        for name, value in tensors.items():
            if not isinstance(value, torch.Tensor):
                kind_of = type(value)
                what = kind_of.__name__ if kind_of.__module__ == "builtins" else f"{kind_of.__module__}.{kind_of.__name__}"
                raise PluginError(f"{owner}: forward_backward's {kind}[{name!r}] is a {what}, not a tensor")
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        raise PluginError(
            f"{owner}: forward_backward must return the loss as computed from the parameters, with autograd on"
            " (not detached, not under torch.no_grad(): keep that for the update in train_step)"
        )
    for a in activations.values():
        if a.requires_grad:
            a.retain_grad()
    loss.backward()
    rows = [Row(f"{name} (no hand-written gradient)", False, False, math.inf) for name in params if name not in grads]
    scales: dict[str, float | None] = {}
    for name, mine in grads.items():
        ref = params[name].grad if name in params else activations[name].grad
        mine = mine.detach()
        if ref is None:  # the loss does not depend on it: autograd's gradient is zero
            ref = torch.zeros_like(mine)
            if name in activations and bool(mine.ne(0).any()):  # yet a gradient is claimed: another graph's tensor
                rows.append(Row(f"{name} (not from the loss's forward pass)", False, False, math.inf))
                continue
        if mine.shape != ref.shape:
            rows.append(Row(f"{name} (shape {tuple(mine.shape)}, autograd's {tuple(ref.shape)})", False, False, math.inf))
            continue
        if not bool(ref.isfinite().all()):  # nothing to check against: say so, never pass NaN against NaN
            rows.append(Row(f"{name} (autograd's is NaN or infinite here: try --own-weights)", False, False, math.inf))
            continue
        rows.append(Row(name, bool(torch.equal(mine, ref)), close(mine, ref), (mine - ref).abs().max().item()))
        if not rows[-1].approximate:
            scales[name] = _scale(mine, ref)
    if hints is not None:
        hints += hints_for(rows, scales, list(activations), len(batch))
    return rows


def _scale(mine: torch.Tensor, ref: torch.Tensor) -> float | None:
    """The one factor ``c`` with ``mine == c * ref`` (within :func:`close`), if there is one."""
    norm = float((ref.double() * ref.double()).sum())
    if norm == 0.0:
        return None
    c = float((mine.double() * ref.double()).sum()) / norm
    return c if close(mine, (c * ref.double()).to(mine.dtype)) else None


def hints_for(rows: list[Row], scales: dict[str, float | None], forward_order: list[str], n: int) -> list[str]:
    """What mismatches suggest: one factor off everywhere (1/N forgotten?), and, going back from the loss through
    the activations, the first that is wrong after one that is right: the step between them."""
    hints = []
    bad = [r.name for r in rows if not r.approximate]
    factors = [scales.get(name) for name in bad]
    if bad and all(f is not None for f in factors) and max(factors) - min(factors) <= 1e-3 * abs(max(factors)):
        c = factors[0]
        guess = f" (the batch size, {n}: a 1/N missing?)" if math.isclose(c, n, rel_tol=1e-3) else ""
        guess = guess or (f" (1/{n}: a 1/N too many?)" if math.isclose(c * n, 1, rel_tol=1e-3) else "")
        which = "every mismatch is" if len(bad) > 1 else f"{bad[0]} is"
        hints.append(f"{which} autograd's gradient times {c:.4g}{guess}")
    wrong = {r.name for r in rows if not r.approximate}
    checked = {r.name for r in rows}
    backward = [a for a in reversed(forward_order) if a in checked]
    for later, earlier in zip(backward, backward[1:], strict=False):
        if later not in wrong and earlier in wrong:
            first = f"going back from the loss, {earlier} is the first that is wrong ({later} is right)"
            hints.append(f"{first}: look at the step from {later} back to {earlier}")
            break
    return hints


def losses_differ(model, batch: Batch, seed: int) -> str | None:  # noqa: ANN001
    """Where ``loss`` and the loss ``forward_backward`` returns disagree on the same batch and weights, what they
    give: the evaluations would report another loss than the one trained (a sum for a mean, say)."""
    with torch.no_grad():
        _seeded(seed)
        evaluated = model.loss(batch)
        _seeded(seed)
        trained = model.forward_backward(batch)[0]
    a, b = float(evaluated), float(trained)
    if math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6):
        return None
    ratio = f"; {a / b:.3g} times it" if b and math.isfinite(a / b) else ""
    both = f"loss() gives {a:.6g} and forward_backward's loss {b:.6g} on the same batch{ratio}"
    return f"{both}: evaluations report the one, training follows the other"


def finite_differences(model, batch: Batch, seed: int, entries: int, eps: float = 1e-6, owner: str = "the model") -> list[Row]:  # noqa: ANN001
    """Autograd against central finite differences in float64, on ``entries`` sampled entries per tensor."""
    model.to(dtype=torch.float64)
    batch = Batch(batch.x.double(), batch.y, batch.onehot.double())
    params = checked_parameters(model, owner)

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


def near_misses(model_class: type) -> list[str]:
    """Methods named almost ``forward_backward`` (a typo that leaves the hand-written gradients unused)."""
    import difflib

    names = {n for klass in model_class.__mro__ for n, value in vars(klass).items() if callable(value)} - {"forward_backward"}
    return difflib.get_close_matches("forward_backward", sorted(names), cutoff=0.8)


def run(impl: Implementation, hp: Hyperparams, samples: int, seed: int, entries: int, own_weights: bool = False) -> int:
    """Print the table for ``impl``; 0 when every gradient is approximately equal, else 1."""
    from rich.console import Console
    from rich.table import Table

    model_class = impl.model_class()
    data = load("default")
    batch = Batch(data.train.x[:samples], data.train.y[:samples], data.train.onehot[:samples])
    _seeded(seed)
    try:
        why = refusal(model_class, hp)
        if why:
            raise UsageError(f"{impl.name}: {why}")
        model = model_class(hp)
        if model_class.has_hand_written_gradients():
            weights = "its own weights" if own_weights else "random weights"
            title = f"{impl.name}: hand-written gradients vs autograd, {weights} ({samples} samples)"
            hints: list[str] = []
            rows = hand_written(model, batch, impl.label, random_weights=not own_weights, hints=hints)
            differ = losses_differ(model, batch, seed)
            if differ:
                print(f"Note: {differ}", file=sys.stderr)
        else:
            title = f"{impl.name}: autograd vs finite differences, float64 ({samples} samples)"
            near = near_misses(model_class)
            if near:
                print(
                    f"Note: {model_class.__name__} defines {', '.join(near)}, not forward_backward: "
                    "no hand-written gradients are used, so autograd's are checked",
                    file=sys.stderr,
                )
            rows = finite_differences(model, batch, seed, entries, owner=impl.label)
    except (PluginError, UsageError):
        raise
    except (Exception, SystemExit) as exc:  # the plugin's own code raised: one line, as mlp-lab run reports it
        raise PluginError(f"{impl.label} failed: {described_where(exc)}") from exc
    table = Table()
    for col in ("tensor", "exact", "approximate", "max diff"):
        table.add_column(col, justify="right" if col == "max diff" else "left")
    for r in rows:
        table.add_row(r.name, str(r.exact), str(r.approximate), f"{r.max_diff:.3e}", style=None if r.approximate else "red")
    console = Console(file=sys.stdout)
    console.print(title, soft_wrap=True, highlight=False, markup=False)  # whole, above the table: never wrapped
    console.print(table)
    bad = [r.name for r in rows if not r.approximate]
    if bad:
        print(f"Gradient mismatch in: {', '.join(bad)}", file=sys.stderr)
        for hint in hints if model_class.has_hand_written_gradients() else []:
            print(f"Hint: {hint}", file=sys.stderr)
        return 1
    print(f"All {len(rows)} gradients match.")
    return 0
