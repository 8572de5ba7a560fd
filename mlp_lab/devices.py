"""Devices: choosing one, what it is, how much memory a run used, and the compiled training step."""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlp_lab.errors import UsageError

if TYPE_CHECKING:
    import torch

    from mlp_lab.data import Batch
    from mlp_lab.model import Model


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring peak memory anew (CUDA; a process's peak resident memory cannot be reset)."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: allocated on a CUDA device, else the process's peak resident memory (NaN if unknown)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return math.nan
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def host_memory_gb() -> float:
    """The machine's physical memory in GiB (NaN if unknown)."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return math.nan


def cpu_name() -> str:
    """The processor's model name where the system says it (Linux), else its architecture."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_compile(device: torch.device) -> None:
    """A usage error when ``--compile`` cannot work here (no C++ compiler for the CPU, no TorchDynamo)."""
    import torch

    if not torch._dynamo.is_dynamo_supported():
        raise UsageError(f"--compile: torch.compile is not supported with this Python or torch ({torch.__version__})")
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX") or "g++", "clang++", "c++")):
        raise UsageError("--compile on the CPU needs a C++ compiler (g++ or clang++ on PATH, or CXX); none was found")


def compiled_train_step(model: Model, device: torch.device, static: tuple[Any, ...] = ()) -> Callable[[Batch, int], Any]:
    """The compiled training step: replayed from CUDA graphs, or ``model.train_step`` through ``torch.compile``.

    On CUDA, a model that defines ``step_key`` has its step recorded as CUDA graphs and replayed
    (:mod:`mlp_lab.cuda_graphs`). Otherwise ``torch.compile``, on CUDA with CUDA graphs
    ("reduce-overhead"): the parameters, and the ``static`` tensors (the full-batch training data), are marked as
    static addresses: updating parameters in place stays inside the recorded graphs, and the data is
    not copied into them at every step. The step number is a Python int: a branch on it (a
    learning-rate decay) compiles once per branch taken.
    """
    import torch

    check_compile(device)
    if device.type == "cuda" and type(model).replays_steps():
        from mlp_lab.cuda_graphs import GraphedStep

        return GraphedStep(model, device)
    _quiet_profiler_notice()
    if device.type != "cuda":
        return torch.compile(model.train_step)
    for tensor in (*model.parameters().values(), *static):
        torch._dynamo.mark_static_address(tensor)
    compiled = torch.compile(model.train_step, mode="reduce-overhead")

    def step(batch: Batch, i: int) -> Any:
        torch.compiler.cudagraph_mark_step_begin()  # each step is a new iteration for CUDA graph trees
        return compiled(batch, i)

    return step


class _ProfilerNotice(logging.Filter):
    """Dynamo's notice that it skips the profiler marks in ``Optimizer.step``: printed even with ``-q``, nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Profiler record function")


def _quiet_profiler_notice() -> None:
    """Keep :class:`_ProfilerNotice` on Dynamo's logger (once)."""
    logger = logging.getLogger("torch._dynamo.variables.ctx_manager")
    if not any(isinstance(f, _ProfilerNotice) for f in logger.filters):
        logger.addFilter(_ProfilerNotice())


def compile_seconds() -> float:
    """Seconds this process has spent in ``torch.compile`` and recording CUDA graphs so far (0 when torch does not say)."""
    dynamo = sys.modules.get("torch._dynamo.utils")
    metrics = getattr(dynamo, "compilation_time_metrics", None) or {}
    graphs = sys.modules.get("mlp_lab.cuda_graphs")
    return float(sum(metrics.get("_compile.compile_inner", ()))) + getattr(graphs, "capture_seconds", 0.0)
