"""The GPU cases in one go, for a session with a CUDA device: ``python -m benchmarks.gpu [--data-dir DIR]``.

1. The seed protocol (10,000 full-batch steps on the default 1000/1000 set) for every plugin with a
   plain reference: the reference's training time, mlp-lab's without and with ``--compile``
   (goal: at most 1.0 s of training with ``--compile``, the same accuracy).
2. Full MNIST (``--data-dir``, the four IDX files): the plain recipe of ``ref_full_mnist`` and each
   ``--full-run`` (default: every registered plugin with its defaults) with ``--compile``: training
   time until the test accuracy first reaches 0.98 (goal: the fastest at most 0.5 s). A run is
   ``NAME`` or ``NAME:K=V,K=V`` with options as ``-p K=V`` takes them (``best:augment=0,steps=500``).

Training times exclude evaluations and compilation (reported apart), as mlp-lab's ``train_time_s``
does. Runs are tracked in a temporary MLflow store when MLflow is installed; where it is not (the
lent GPU machines' image has torch but no MLflow), the same seeding and training loop run
untracked, and the header says ``"tracking": false``. Each row is printed, and written to
``--json`` (default ``$OUT/gpu.json``), as soon as it is measured: a run cut short keeps them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="full MNIST folder (default: shared/data/mnist, ../shared/data/mnist)")
    parser.add_argument("--plugins", help="seed protocol: comma-separated plugins (default: every one with a plain reference)")
    parser.add_argument(
        "--full-run",
        action="append",
        metavar="NAME[:K=V,...]",
        help="full MNIST: a plugin and its option overrides; repeatable (default: every registered plugin)",
    )
    parser.add_argument("--full-eager", action="store_true", help="full MNIST: train without --compile")
    parser.add_argument("--full-eval-every", type=int, default=50, help="full MNIST: steps between evaluations")
    parser.add_argument("--device", default="cuda", help="cuda; cpu checks this script itself (its figures mean nothing there)")
    parser.add_argument("--steps", type=int, default=10000, help="steps of the seed protocol")
    parser.add_argument("--skip-seed", action="store_true", help="leave out the seed-protocol case")
    parser.add_argument("--skip-full", action="store_true", help="leave out the full-MNIST case")
    parser.add_argument("--json", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu.json")
    return parser.parse_args(argv)


class Report:
    """Rows printed as they come and kept in a JSON file."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path, self.data = path, {"header": header, "rows": []}
        print(json.dumps(header), flush=True)

    def add(self, **row: Any) -> None:
        self.data["rows"].append(row)
        print(json.dumps(row), flush=True)
        self.path.write_text(json.dumps(self.data, indent=2))


def full_data_dir(given: Path | None) -> Path | None:
    for folder in (given, Path("shared/data/mnist"), Path("../shared/data/mnist")):
        if folder is not None and any((folder / f"train-images-idx3-ubyte{ext}").exists() for ext in ("", ".gz")):
            return folder
    return None


def run_plugin(name: str, data: Any, device: Any, tracker: Any, compile: bool, **overrides: Any) -> Any:
    """One mlp-lab run: tracked (``runs.execute``, as ``mlp-lab run`` does), or with ``tracker`` None the same
    seeding and training loop (``training.train``) without MLflow. Its summary, with ``.metrics()``."""
    import random

    import torch

    from mlp_lab import training
    from mlp_lab.registry import get_registry
    from mlp_lab.runs import RunSpec, execute

    impl = get_registry().get(name)
    spec = RunSpec(impl, impl.model_class(), impl.hyperparams(overrides), 1337, compile)
    if tracker is None:
        random.seed(spec.seed)
        torch.manual_seed(spec.seed)
        model = spec.model_class(spec.hp)
        model.to(device)
        return training.train(model, data, spec.hp, spec.seed, lambda v, f: None, lambda e: None, compile=compile)
    outcome = execute(spec, data, device, tracker, quiet=True)
    if outcome.status != "FINISHED":
        raise RuntimeError(f"{name}: {outcome.error}")
    return outcome.summary


def parse_run(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME[:K=V,K=V]`` as (name, overrides)."""
    name, _, rest = spec.partition(":")
    overrides = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name.strip(), {k.strip(): v.strip() for k, v in overrides.items()}


def time_to(summary: Any, target: float) -> float:
    """Training seconds until the test accuracy first reached ``target`` (NaN if never)."""
    return next((e.train_time_s for e in summary.evaluations if e.test_accuracy >= target), math.nan)


def seed_protocol(report: Report, steps: int, plugins: list[str] | None, device: Any, tracker: Any) -> None:
    from benchmarks import plain
    from benchmarks.cases import references
    from mlp_lab import data as mlp_data

    lab_data, plain_data = mlp_data.load().to(device), plain.load(device)
    for name, ref in references().items():
        if plugins and name not in plugins:
            continue
        try:
            ref.train(plain_data, 50, 10)  # warm-up
            r = ref.train(plain_data, steps, max(1, steps // 100))
            eager = run_plugin(name, lab_data, device, tracker, False, steps=steps).metrics()
            m = run_plugin(name, lab_data, device, tracker, True, steps=steps).metrics()
        except Exception as exc:  # noqa: BLE001 - one plugin's failure is a row, not the end
            report.add(case=f"seed protocol: {name}, {steps} steps", error=f"{type(exc).__name__}: {exc}")
            continue
        report.add(
            case=f"seed protocol: {name}, {steps} steps",
            plain_train_s=r.train_time_s,
            plain_test_accuracy=r.test_accuracy,
            mlp_lab_train_s=eager["train_time_s"],
            mlp_lab_test_accuracy=eager["test_accuracy"],
            compiled_train_s=m["train_time_s"],
            compiled_compile_s=m.get("compile_time_s", 0.0),
            compiled_test_accuracy=m["test_accuracy"],
            goal="compiled_train_s <= 1.0 and |accuracy - eager| <= 0.01",
            passed=m["train_time_s"] <= 1.0 and abs(m["test_accuracy"] - eager["test_accuracy"]) <= 0.01,
        )


def full_mnist(
    report: Report, folder: Path, runs: list[str] | None, every: int, device: Any, tracker: Any, compile: bool = True
) -> None:
    from benchmarks import plain, ref_full_mnist
    from mlp_lab import data as mlp_data
    from mlp_lab.registry import get_registry

    plain_data = plain.load(device, folder)
    ref_full_mnist.train(plain_data, epochs=1)  # warm-up
    r = ref_full_mnist.train(plain_data)
    report.add(case="full MNIST: plain reference (ref_full_mnist)", **r)
    lab_data = mlp_data.load("full", folder).to(device)
    best = math.inf
    how = "--compile" if compile else "eager"
    for spec in runs or get_registry().names():
        name, overrides = parse_run(spec)
        case = f"full MNIST: {spec} {how}"
        try:
            summary = run_plugin(name, lab_data, device, tracker, compile, **{"eval_every": str(every), **overrides})
        except Exception as exc:  # noqa: BLE001 - one plugin's failure is a row, not the end
            report.add(case=case, error=f"{type(exc).__name__}: {exc}")
            continue
        reached = time_to(summary, 0.98)
        best = min(best, reached) if not math.isnan(reached) else best
        m = summary.metrics()
        report.add(
            case=case,
            time_to_0_98_s=reached,
            train_time_s=m["train_time_s"],
            compile_time_s=m.get("compile_time_s", 0.0),
            test_accuracy=m["test_accuracy"],
            steps=summary.steps,
            peak_memory_mb=m.get("peak_memory_mb"),
            test_accuracy_by_step=[[e.step, round(e.test_accuracy, 4)] for e in summary.evaluations],
        )
    if compile:
        report.add(case="full MNIST: fastest plugin to 0.98", seconds=best, goal="<= 0.5", passed=best <= 0.5)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks.gpu: no CUDA device here; nothing measured", file=sys.stderr)
        return 2
    from mlp_lab.devices import cpu_name, host_memory_gb

    device = torch.device(args.device)
    props = torch.cuda.get_device_properties(device) if device.type == "cuda" else None
    report = Report(
        args.json,
        {
            "device": props.name if props else cpu_name(),
            "memory_gb": round(props.total_memory / 2**30, 1) if props else host_memory_gb(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python -m benchmarks.gpu " + " ".join(sys.argv[1:] if argv is None else argv),
            "tracking": importlib.util.find_spec("mlflow") is not None,
        },
    )
    tracker = None  # without MLflow (the GPU image has none), the same loop untracked
    if importlib.util.find_spec("mlflow") is not None:
        from mlp_lab.tracking import Tracker

        tracker = Tracker(f"sqlite:///{Path(tempfile.mkdtemp()) / 'mlflow.db'}", "gpu-bench")
    if not args.skip_seed:
        seed_protocol(report, args.steps, args.plugins.split(",") if args.plugins else None, device, tracker)
    if not args.skip_full:
        folder = full_data_dir(args.data_dir)
        if folder is None:
            report.add(case="full MNIST", error="no MNIST files found: pass --data-dir")
        else:
            full_mnist(report, folder, args.full_run, args.full_eval_every, device, tracker, not args.full_eager)
    return 0


if __name__ == "__main__":
    sys.exit(main())
