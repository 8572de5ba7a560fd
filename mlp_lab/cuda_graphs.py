"""The training step replayed from CUDA graphs: ``--compile`` on CUDA for models that define ``step_key``.

A small network's step is a few dozen tiny kernels; launched one by one from Python, the GPU waits
for the launches. Recorded once as a CUDA graph, a step is one launch. The model says, through
:meth:`~mlp_lab.model.Model.step_key`, which steps do the same device work: one graph is recorded
per key (a learning-rate decay at step 5000 makes two) and replayed for every step with that key.
(Recording the ``torch.compile``'d step instead measured slower on an H100: 2.2 s against 0.9 s
for the seed's 10,000 autograd steps, 2.4 s against 0.15 s to 0.98 on full MNIST.)

Steps run unrecorded first: the first ``WARMUP`` steps (they create optimiser state and pick
kernels) and the first step of each new key. Optimisers found on the model are switched to
``capturable`` first, so their step counters live on the device (and Adam's to its fused
kernel). A batch that is not the recorded one is copied into the recorded tensors before each
replay. When a step cannot be recorded (the unrecorded steps run with CUDA's synchronisation
check on: a step that waits for the host, with ``.item()`` say, is never recorded), or a model
makes more than ``MAX_KEYS`` keys, the rest of the run trains eagerly and says so once on stderr.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from mlp_lab.data import Batch
    from mlp_lab.model import Model

WARMUP = 3
MAX_KEYS = 4
capture_seconds = 0.0  # time this process spent recording graphs (reported with compile time)


def make_capturable(model: Model) -> None:
    """Switch every optimiser held in an attribute of ``model`` to ``capturable`` (state on the device),
    and to its fused kernel where it has one and the model did not choose an implementation.

    A fused Adam step is two kernels; the capturable multi-tensor one is eighteen, and inside a
    graph each costs a few microseconds of GPU time, about as much as a small layer.
    """
    import torch

    for value in vars(model).values():
        if isinstance(value, torch.optim.Optimizer):
            for group in value.param_groups:
                if "capturable" in group:
                    group["capturable"] = True
                if _may_fuse(value, group):
                    group["fused"], group["foreach"] = True, False


def _may_fuse(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> bool:
    """Whether ``group`` can switch to the fused kernel: Adam or AdamW, no implementation chosen, no state yet, CUDA floats."""
    import torch

    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return False
    if group.get("fused", False) is not None or group.get("foreach") is not None or group.get("differentiable"):
        return False
    params = group["params"]
    if any(p in optimizer.state for p in params):
        return False
    return all(p.is_cuda and p.is_floating_point() for p in params)


class GraphedStep:
    """``model.train_step`` recorded as one CUDA graph per :meth:`~mlp_lab.model.Model.step_key` and replayed."""

    def __init__(self, model: Model, device: torch.device) -> None:
        import torch

        self.model, self.device, self.torch = model, device, torch
        self.graphs: dict[Hashable, tuple[Any, Any]] = {}  # key -> (graph, its output)
        self.warmed: set[Hashable] = set()  # keys whose step has run unrecorded
        self.inputs: Batch | None = None  # the batch tensors the graphs read
        self.warm_steps = 0
        self.given_up = False
        make_capturable(model)

    def __call__(self, batch: Batch, step: int) -> torch.Tensor:
        if self.given_up:
            return self.model.train_step(batch, step)
        key = self.model.step_key(step)
        if self.warm_steps < WARMUP or key not in self.warmed:
            if key not in self.warmed and len(self.warmed) >= MAX_KEYS:
                return self._give_up(f"more than {MAX_KEYS} different step keys", batch, step)
            self.warm_steps += 1
            self.warmed.add(key)
            out, synced = self._warm_up(batch, step)
            if synced:  # recording it would fail part-way, and leave the random number generator mid-recording
                self._stop("it synchronises with the host, e.g. .item() or .cpu()")
            return out
        if key not in self.graphs:
            try:
                self._record(key, step)
            except Exception as exc:  # noqa: BLE001 - the step cannot be recorded: train eagerly
                return self._give_up(f"{type(exc).__name__}: {exc}", batch, step)
        if not self._feed(batch):
            return self._give_up("a batch of another shape", batch, step)
        graph, output = self.graphs[key]
        graph.replay()
        return output

    def _warm_up(self, batch: Batch, step: int) -> tuple[torch.Tensor, bool]:
        """One step unrecorded, on a side stream; and whether it synchronised with the host."""
        torch = self.torch
        if self.inputs is None:
            self.inputs = batch  # the full training set stays put; later mini-batches are copied into these tensors
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught, torch.cuda.stream(side):
                warnings.simplefilter("always")
                out = self.model.train_step(batch, step)
        finally:
            torch.cuda.set_sync_debug_mode(mode)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return out, any("synchroniz" in str(w.message) for w in caught)

    def _feed(self, batch: Batch) -> bool:
        """Put ``batch`` where the graphs read it (nothing to do for the recorded batch itself); False if it cannot go there."""
        recorded = self.inputs
        assert recorded is not None
        for mine, given in ((recorded.x, batch.x), (recorded.y, batch.y), (recorded.onehot, batch.onehot)):
            if mine.data_ptr() != given.data_ptr():
                if mine.shape != given.shape:
                    return False
                mine.copy_(given)
        return True

    def _record(self, key: Hashable, step: int) -> None:
        global capture_seconds
        torch = self.torch
        started = time.perf_counter()
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records on a side stream; nothing runs yet
            output = self.model.train_step(self.inputs, step)
        self.graphs[key] = (graph, output)
        capture_seconds += time.perf_counter() - started

    def _stop(self, why: str) -> None:
        self.given_up = True
        print(f"mlp-lab: --compile: cannot replay this model's step from a CUDA graph ({why}); training eagerly", file=sys.stderr)

    def _give_up(self, why: str, batch: Batch, step: int) -> torch.Tensor:
        self._stop(why)
        return self.model.train_step(batch, step)
