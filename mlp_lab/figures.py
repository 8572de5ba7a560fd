"""Figures: the loss curve of one run, and the overlay of a comparison (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlp_lab.compare import Curve
    from mlp_lab.summary import Summary

SPARSE = 25  # a curve of this many points or fewer is drawn with its points marked


def prepare() -> None:
    """Import matplotlib's figure and PNG backend now (about 0.4 s of CPU), not when the first figure is drawn."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401


def loss_curve(summary: Summary, title: str) -> Figure:
    """Training loss per step (log scale) beside train and test accuracy per evaluation."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))  # fixed margins: a layout engine would triple the drawing time
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.84, wspace=0.22)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(range(len(summary.losses)), summary.losses, lw=0.8, color="tab:blue")
    if summary.losses and min(summary.losses) > 0:
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="training loss", title="Training loss")
    ax_loss.grid(True, alpha=0.3)
    steps = [e.step for e in summary.evaluations]
    marker = "o" if len(steps) <= SPARSE else None  # a few evaluations: the points, not only lines between them
    ax_acc.plot(steps, [e.train_accuracy for e in summary.evaluations], label="train", color="tab:orange", marker=marker, ms=3)
    ax_acc.plot(steps, [e.test_accuracy for e in summary.evaluations], label="test", color="tab:green", marker=marker, ms=3)
    final = summary.evaluations[-1] if summary.evaluations else None
    if final is not None:
        ax_acc.annotate(f"test {final.test_accuracy:.3f}", (final.step, final.test_accuracy), ha="right", va="top")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend(loc="lower right")
    fig.suptitle(title)
    return fig


def comparison(loss: Sequence[Curve], accuracy: Sequence[Curve], title: str, band: str) -> Figure:
    """Training loss (log scale) and test accuracy against step, one colour and dash per row, a band for the spread."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    labels = list(dict.fromkeys(c.label for c in [*accuracy, *loss]))
    # The legend sits below both plots: as many columns as the longest entry lets fit across (about 150
    # characters at this size), and no more than the entries need; an entry too long for a line is cut.
    longest = max((len(label) for label in labels), default=0) + 24  # " (3 runs, test 0.879)" and the line sample
    columns = max(1, min(1 if len(labels) <= 4 else 2 if len(labels) <= 12 else 3, 150 // longest))
    fig = Figure(figsize=(12, 5 + 0.22 * -(-len(labels) // columns)), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    dashes = ["-", "--", ":", "-."]  # identical curves (the same maths in two implementations) stay visible
    colours = [f"C{i}" for i in range(10)] if len(labels) <= 10 else list(colormaps["tab20"].colors)  # one each
    style = {label: {"color": colours[i % len(colours)], "linestyle": dashes[i % len(dashes)]} for i, label in enumerate(labels)}
    final = {c.label: f", test {c.mean[-1]:.3f}" for c in accuracy}
    for ax, curves in ((ax_loss, loss), (ax_acc, accuracy)):
        for c in curves:
            runs = f"{c.runs} run{'s' if c.runs != 1 else ''}"
            name = c.label if len(c.label) <= 120 else c.label[:119] + "…"
            marker = "o" if len(c.steps) <= SPARSE else None  # a few evaluations: the points, not only lines between them
            label = f"{name} ({runs}{final.get(c.label, '')})"
            ax.plot(c.steps, c.mean, lw=1.6, label=label, marker=marker, ms=3, **style[c.label])
            if c.runs > 1:
                ax.fill_between(c.steps, c.low, c.high, color=style[c.label]["color"], alpha=0.18, lw=0)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    if loss and all(v > 0 for c in loss for v in c.low):
        ax_loss.set_yscale("log")
    ax_loss.set(ylabel="training loss (each implementation's own; log scale)", title="Training loss")
    ax_acc.set(ylabel="test accuracy", title="Test accuracy")
    if accuracy:  # zoom on where the curves settle: the first tenth of training may fall below the axis
        last = max(c.steps[-1] for c in accuracy)
        low = min(v for c in accuracy for s, v in zip(c.steps, c.low, strict=True) if s >= last / 10)
        high = max(v for c in accuracy for v in c.high)
        pad = max(0.01, (high - low) * 0.25)
        ax_acc.set_ylim(max(0.0, low - pad), min(1.0, high + pad))
    legend_ax = ax_acc if accuracy else ax_loss
    handles, texts = legend_ax.get_legend_handles_labels()
    if handles:  # below the plots, which keep their width however long the labels
        fig.legend(handles, texts, loc="outside lower center", ncols=columns, fontsize=9, frameon=False)
    fig.suptitle(f"{title}\n{band}", fontsize=11)
    return fig
