"""Figures: the loss curve of one run (matplotlib, no display needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlp_lab.training import Summary


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
    ax_acc.plot(steps, [e.train_accuracy for e in summary.evaluations], label="train", color="tab:orange")
    ax_acc.plot(steps, [e.test_accuracy for e in summary.evaluations], label="test", color="tab:green")
    final = summary.evaluations[-1] if summary.evaluations else None
    if final is not None:
        ax_acc.annotate(f"test {final.test_accuracy:.3f}", (final.step, final.test_accuracy), ha="right", va="top")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend(loc="lower right")
    fig.suptitle(title)
    return fig
