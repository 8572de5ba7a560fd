"""The accuracy and time targets of ``best``, measured with the tool itself.

``python -m benchmarks.targets [--targets default,full,full-aug] [--seeds 0,1,2] [--reuse]``

Each target is one ``mlp-lab run`` command (printed, run as a subprocess, tracked in MLflow, by
default in ./mlruns under the experiment ``mlp-lab-targets``); its runs are then read back from
MLflow and checked. ``--reuse`` runs nothing and checks the latest finished runs of each seed
already in the store that match the target's command.

- ``default``: ``best`` with its defaults on the 1000/1000 set: test accuracy >= 0.95, training
  <= 90 s (on a 2-core CPU; a shared CPU makes it slower: the load average is printed).
- ``full``: ``best`` on full MNIST without augmentation: test accuracy >= 0.985.
- ``full-aug``: ``best`` on full MNIST with augmentation: test accuracy >= 0.990.

It also reports each run's training time until its test accuracy first reached 0.98 (full MNIST
is evaluated once per epoch; the time is the run's training time times the fraction of steps
done by then), next to a plain-PyTorch reference measured by this script the same way: a
784-512-512-10 ReLU MLP, Adam lr 1e-3, batches of 256, one epoch at a time (7.3 s to 0.98 on a
quiet 2-core machine, per issue 4). Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
THRESHOLD = 0.98


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    args: tuple[str, ...]
    min_accuracy: float
    max_train_s: float | None = None
    match: dict[str, str] = field(default_factory=dict)  # the params that identify its runs in the store

    @property
    def full(self) -> bool:
        return "--full" in self.args

    @property
    def plugin(self) -> str:
        return self.args[self.args.index("--plugin") + 1]


FULL = "mnist-full-60000-10000"
# On full MNIST an epoch is 600 steps of 100; best evaluates every 600 steps, once per epoch.
TARGETS = {
    t.name: t
    for t in (
        Target(
            "default",
            "best, its defaults, 1000/1000",
            ("--plugin", "best"),
            0.95,
            90.0,
            {"dataset": "mnist-default-1000-1000", "steps": "3000", "augment": "True"},
        ),
        Target(
            "full",
            "best, full MNIST, no augmentation, 20 epochs",
            ("--plugin", "best", "--full", "--steps", "12000", "-p", "augment=0"),
            0.985,
            match={"dataset": FULL, "steps": "12000", "augment": "False"},
        ),
        Target(
            "full-aug",
            "best, full MNIST, augmented, 20 epochs",
            ("--plugin", "best", "--full", "--steps", "12000"),
            0.990,
            match={"dataset": FULL, "steps": "12000", "augment": "True"},
        ),
    )
}


def run_target(target: Target, seeds: list[int], data_dir: Path, uri: str, experiment: str) -> None:
    """Run the target's ``mlp-lab run`` command (its failures show in the runs read back)."""
    args = [*target.args, "--seeds", ",".join(map(str, seeds)), "--tracking-uri", uri, "--experiment", experiment, "-q"]
    if target.full:
        args += ["--data-dir", str(data_dir)]
    print("$ mlp-lab run " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "mlp_lab", "run", *args], check=False)


def read_runs(uri: str, experiment: str, target: Target, seeds: list[int], since_ms: int = 0) -> list[dict]:
    """The latest run of each seed that matches ``target`` (started since ``since_ms``), with its figures."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = " and ".join(
        [
            "tags.`mlp_lab.kind` = 'run'",
            f"tags.`mlp_lab.plugin` = '{target.plugin}'",
            f"attributes.start_time >= {since_ms}",
            *(f"params.{k} = '{v}'" for k, v in target.match.items()),
        ]
    )
    latest: dict[int, dict] = {}
    for run in client.search_runs([exp.experiment_id], query, max_results=1000, order_by=["attributes.start_time ASC"]):
        seed = int(run.data.params["seed"])
        if seed not in seeds or (since_ms == 0 and run.info.status != "FINISHED"):
            continue
        m, steps = run.data.metrics, int(run.data.params["steps"])
        history = sorted(client.get_metric_history(run.info.run_id, "test_accuracy"), key=lambda x: x.step)
        reached = next((h.step for h in history if h.value >= THRESHOLD), None)
        latest[seed] = {
            "seed": seed,
            "status": run.info.status,
            "test_accuracy": m.get("test_accuracy"),
            "train_time_s": m.get("train_time_s"),
            "time_to_098_s": None if reached is None or "train_time_s" not in m else m["train_time_s"] * reached / steps,
            "run_id": run.info.run_id,
        }
    return [latest[s] for s in sorted(latest)]


def reference_time_to(threshold: float, data_dir: Path, seed: int = 0, max_epochs: int = 20) -> tuple[float, int, float]:
    """Plain PyTorch, no mlp-lab: 784-512-512-10 ReLU, Adam 1e-3, batch 256, test accuracy after each epoch.

    Returns the training time (evaluation excluded) until the test accuracy first reached
    ``threshold`` (NaN if it never did), the epochs it took, and the accuracy then.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    from mlp_lab import data

    d = data.load("full", data_dir)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(seed)
    elapsed, acc = 0.0, 0.0
    for epoch in range(1, max_epochs + 1):
        start = time.perf_counter()
        for idx in torch.randperm(len(d.train), generator=order).split(256):
            loss = F.cross_entropy(net(d.train.x[idx]), d.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        elapsed += time.perf_counter() - start
        with torch.no_grad():
            acc = (net(d.test.x).argmax(1) == d.test.y).float().mean().item()
        if acc >= threshold:
            return elapsed, epoch, acc
    return math.nan, max_epochs, acc


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def report(names: list[str], results: dict[str, list[dict]], seeds: list[int], reference: tuple[float, int, float] | None) -> int:
    """One line per run and a verdict per target; returns the number of targets missed."""
    ref_s = reference[0] if reference else None
    print(f"\n{'target':<9} {'seed':>4} {'test acc':>8} {'train s':>8} {'to 0.98 s':>9} {'/ ref':>6}  run")
    missed = 0
    for name in names:
        target, runs = TARGETS[name], results[name]
        for r in runs:
            to98 = r["time_to_098_s"] if target.full else None
            ratio = to98 / ref_s if to98 is not None and ref_s else None
            print(
                f"{name:<9} {r['seed']:>4} {fmt(r['test_accuracy'], '.4f'):>8} {fmt(r['train_time_s'], '.1f'):>8} "
                f"{fmt(to98, '.1f'):>9} {fmt(ratio, '.2f'):>6}  {r['run_id']} {'' if r['status'] == 'FINISHED' else r['status']}"
            )
        done = [r for r in runs if r["status"] == "FINISHED"]
        accs, times = [r["test_accuracy"] for r in done], [r["train_time_s"] for r in done]
        ok = len(done) == len(seeds) and min(accs) >= target.min_accuracy
        verdict = f"{len(done)}/{len(seeds)} seeds finished"
        if accs:
            verdict += (
                f"; test acc {min(accs):.4f} to {max(accs):.4f} (mean {statistics.mean(accs):.4f}; target {target.min_accuracy})"
            )
        if target.max_train_s is not None and times:
            ok = ok and max(times) <= target.max_train_s
            verdict += f"; training {min(times):.1f} to {max(times):.1f} s (target {target.max_train_s:.0f} s)"
        missed += not ok
        print(f"{'MET' if ok else 'MISSED':>6} {name}: {target.what}: {verdict}")
    if reference:
        print(
            f"reference (plain PyTorch 512-512, Adam, batch 256): {THRESHOLD} after {reference[1]} epochs, {fmt(ref_s, '.1f')} s"
        )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load:
        print(f"load average now {load[0]:.1f} on {os.cpu_count()} CPUs (times grow when the CPU is shared)")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.targets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of: {', '.join(TARGETS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="train no target: check the matching runs already in the store (the reference still runs; --no-reference)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the plain-PyTorch reference")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("MLP_LAB_DATA_DIR", REPO.parent / "shared" / "data" / "mnist"))
    )
    parser.add_argument("--tracking-uri", default=f"sqlite:///{Path.cwd() / 'mlruns' / 'mlflow.db'}")
    parser.add_argument("--experiment", default="mlp-lab-targets")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    if not names or any(n not in TARGETS for n in names):
        parser.error(f"--targets: choose from {', '.join(TARGETS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds expects comma-separated integers, got {args.seeds!r}")
    needs_data = any(TARGETS[n].full for n in names) and not args.reuse
    if needs_data or not args.no_reference:
        if not args.data_dir.is_dir():
            parser.error(f"full MNIST is not in {args.data_dir} (--data-dir; --no-reference skips the reference)")
    if args.tracking_uri.startswith("sqlite:///"):
        Path(args.tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)

    reference = None if args.no_reference else reference_time_to(THRESHOLD, args.data_dir)
    if reference:
        print(f"plain-PyTorch reference: {THRESHOLD} after {reference[1]} epochs, {fmt(reference[0], '.1f')} s", flush=True)
    results = {}
    for name in names:
        started_ms = 0 if args.reuse else int(time.time() * 1000)
        if not args.reuse:
            run_target(TARGETS[name], seeds, args.data_dir, args.tracking_uri, args.experiment)
        results[name] = read_runs(args.tracking_uri, args.experiment, TARGETS[name], seeds, started_ms)
    return 1 if report(names, results, seeds, reference) else 0


if __name__ == "__main__":
    sys.exit(main())
