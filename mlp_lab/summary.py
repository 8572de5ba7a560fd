"""What a training run measured: its evaluations and summary (plain data: no torch, so the tracking process can read it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Evaluation:
    step: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    train_time_s: float = 0.0  # training time before this evaluation (evaluations excluded)

    def metrics(self) -> dict[str, float]:
        return {
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "train_eval_loss": self.train_loss,
            "test_loss": self.test_loss,
        }


@dataclass
class Summary:
    steps: int = 0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    compile_time_s: float = 0.0  # with compile: time spent compiling, not counted in train_time_s
    peak_memory_mb: float = math.nan
    losses: list[float] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)

    @property
    def final(self) -> Evaluation:
        return self.evaluations[-1]

    def metrics(self) -> dict[str, float]:
        """The run's final figures."""
        return {
            **self.final.metrics(),
            "final_train_loss": self.losses[-1] if self.losses else math.nan,
            "train_time_s": self.train_time_s,
            "eval_time_s": self.eval_time_s,
            "steps_per_s": self.steps / self.train_time_s if self.train_time_s > 0 else math.nan,
            **({"compile_time_s": self.compile_time_s} if self.compile_time_s else {}),
            **({"peak_memory_mb": self.peak_memory_mb} if not math.isnan(self.peak_memory_mb) else {}),
        }
