"""Where nn-module's recorded step spends GPU time, and what cuts it: ``python -m benchmarks.nn_module_step``.

A stand-alone copy of the seed's step 3 (``nn.Linear`` 784-200-10, tanh, MSE towards 0.9-scaled
one-hot targets, AdamW lr 1e-3, full batch of the embedded 1000 images), recorded as one CUDA graph
as ``--compile`` records it, and replayed ``--steps`` times under each variant: the optimiser's
implementation, cuBLASLt, TF32. Prints one JSON row per variant (time per step, test accuracy and,
for some, the kernels of one replay by GPU time) and writes them to ``$OUT/nn_module_step.json``.
Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks import plain

WARMUP = 3


def record(data: plain.Data, optimiser: str) -> tuple[nn.Module, Callable[[], torch.Tensor]]:
    """The seeded network and its step: ``fused``, ``foreach`` or ``compiled`` (foreach through ``torch.compile``)."""
    torch.manual_seed(1337)
    net = nn.Sequential(nn.Linear(784, 200), nn.Tanh(), nn.Linear(200, 10), nn.Tanh()).to(data.device)
    fused = optimiser == "fused"
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, capturable=True, fused=fused, foreach=not fused)
    opt_step = torch.compile(opt.step) if optimiser == "compiled" else opt.step
    loss_fn, x, target = nn.MSELoss(), data.x, 0.9 * data.onehot

    def step() -> torch.Tensor:
        loss = loss_fn(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt_step()
        return loss.detach()

    return net, step


def kernels(graph: torch.cuda.CUDAGraph, replays: int = 20) -> list[list[Any]]:
    """The kernels of one replay: [name, launches, µs of GPU time], longest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()
    found: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = found.setdefault(event.name[:90], [0, 0.0])
            entry[0] += 1
            entry[1] += event.device_time
    rows = [[name, n / replays, round(us / replays, 1)] for name, (n, us) in found.items()]
    return sorted(rows, key=lambda row: -row[2])


def measure(data: plain.Data, steps: int, case: str, optimiser: str, profiled: bool) -> dict[str, Any]:
    net, step = record(data, optimiser)
    losses = torch.empty(steps, device=data.device)
    started = time.perf_counter()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as before any recording
        for i in range(WARMUP):
            losses[i] = step()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    torch.cuda.synchronize()
    setup_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(WARMUP, steps):
        graph.replay()
        losses[i] = out
    torch.cuda.synchronize()
    train_s = time.perf_counter() - started
    with torch.no_grad():
        accuracy = (net(data.test_x).argmax(1) == data.test_y).float().mean().item()
    row = {
        "case": case,
        "us_per_step": round(1e6 * train_s / (steps - WARMUP), 1),
        "train_s": round(train_s, 3),
        "setup_s": round(setup_s, 2),
        "test_accuracy": round(accuracy, 4),
    }
    if profiled:
        row["kernels"] = kernels(graph)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nn_module_step", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--json", type=Path, default=Path(os.environ.get("OUT", ".")) / "nn_module_step.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks.nn_module_step: no CUDA device here; nothing measured", file=sys.stderr)
        return 2
    data = plain.load("cuda")
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name()}), flush=True)
    cublas, tf32 = torch.backends.cuda.preferred_blas_library(), torch.backends.cuda.matmul.allow_tf32
    variants = [  # case, optimiser, profiled, settings applied around it
        ("fused AdamW (what --compile does)", "fused", True, {}),
        ("fused AdamW, cuBLASLt", "fused", True, {"blas": "cublaslt"}),
        ("AdamW multi-tensor, capturable", "foreach", False, {}),
        ("AdamW step through torch.compile", "compiled", True, {}),
        ("fused AdamW, TF32 matrix products", "fused", False, {"tf32": True}),
    ]
    rows = []
    for case, optimiser, profiled, settings in variants:
        torch.backends.cuda.preferred_blas_library(settings.get("blas", cublas))
        torch.backends.cuda.matmul.allow_tf32 = settings.get("tf32", tf32)
        try:
            row = measure(data, args.steps, case, optimiser, profiled)
        except Exception as exc:  # noqa: BLE001 - one variant's failure is a row, not the end
            row = {"case": case, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            torch.backends.cuda.preferred_blas_library(cublas)
            torch.backends.cuda.matmul.allow_tf32 = tf32
        rows.append(row)
        print(json.dumps(row), flush=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
