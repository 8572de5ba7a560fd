"""The benchmark cases: each measures mlp-lab and its plain-PyTorch reference side by side, in this process's run.

A case yields :class:`Row` objects. Repeats alternate the sides (ABBA order; three sides take
turns) so that drift in the machine's load hits all alike, and each side's figure is its best of the repeats.
"""

from __future__ import annotations

import importlib
import math
import os
import pkgutil
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchmarks

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One line of the table. ``goal`` is checked on ``ratio`` (or on ``ours`` when ``goal_on_ours``)."""

    case: str
    ours: float
    reference: float | None
    unit: str
    goal: float | None = None  # the bound
    at_least: bool = False  # the goal is a lower bound (rates), not an upper one (times, memory)
    goal_on_ours: bool = False  # the goal bounds mlp-lab's figure itself, not the ratio
    cpu: tuple[float, float] | None = None  # CPU seconds (all threads) of both sides, where measured
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if not self.reference else self.ours / self.reference

    @property
    def cpu_ratio(self) -> float | None:
        return None if not self.cpu else self.cpu[0] / self.cpu[1]

    @property
    def passed(self) -> bool | None:
        value = self.ours if self.goal_on_ours else self.ratio
        if self.goal is None or value is None or math.isnan(value):
            return None
        return value >= self.goal if self.at_least else value <= self.goal

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "mlp_lab": self.ours,
            "reference": self.reference,
            "unit": self.unit,
            "ratio": self.ratio,
            "cpu_s": self.cpu,
            "cpu_ratio": self.cpu_ratio,
            "goal": (">=" if self.at_least else "<=") + f" {self.goal}" + (f" {self.unit}" if self.goal_on_ours else "")
            if self.goal is not None
            else None,
            "passed": self.passed,
            "note": self.note,
            "samples": self.samples,
        }


@dataclass
class Settings:
    """How long each case runs."""

    loop_steps: int = 10000  # tracking overhead and end to end: the seed protocol
    throughput_steps: int = 2000
    repeats: int = 3
    startup_repeats: int = 5
    device: str = "cpu"
    threads: int | None = None
    log: Callable[[str], None] = print

    @classmethod
    def quick(cls, **kw: Any) -> Settings:
        return cls(loop_steps=1000, throughput_steps=300, repeats=2, startup_repeats=3, **kw)


# -- references ----------------------------------------------------------------------------------


def references() -> dict[str, Any]:
    """The plain references in this package (``ref_*.py``), by the plugin each mirrors."""
    found = {}
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name.startswith("ref_"):
            module = importlib.import_module(f"benchmarks.{info.name}")
            if module.PLUGIN is not None:
                found[module.PLUGIN] = module
    return found


def alternate(repeats: int) -> Iterator[tuple[str, str]]:
    """ABBA: (ref, ours), (ours, ref), (ref, ours), ..."""
    for i in range(repeats):
        yield ("ref", "ours") if i % 2 == 0 else ("ours", "ref")


def take_turns(sides: list[str], repeats: int) -> Iterator[list[str]]:
    """Each repeat starts one side later: (a, b, c), (b, c, a), (c, a, b), ... so every side takes every place."""
    for i in range(repeats):
        k = i % len(sides)
        yield sides[k:] + sides[:k]


# -- in-process training: the loop with tracking against the bare loop ----------------------------


class Lab:
    """mlp-lab's real run path (``runs.execute``: tracking, figure, model) in this process, on a fresh store.

    As in ``mlp-lab run``, a tracking process writes the runs (where one can be started).
    """

    def __init__(self, settings: Settings) -> None:
        import torch

        from benchmarks import plain
        from mlp_lab import data, tracking_process
        from mlp_lab.runs import resolve_device
        from mlp_lab.tracking import Tracker

        self.settings = settings
        self.folder = Path(tempfile.mkdtemp(prefix="mlp-lab-bench-"))
        self.device = resolve_device(settings.device)
        self.data = data.load().to(self.device)
        self.plain = plain.load(self.device)
        uri = f"sqlite:///{self.folder / 'mlflow.db'}"
        self.process = tracking_process.start()
        self.tracker = tracking_process.RemoteTracker(self.process, uri, "bench") if self.process else Tracker(uri, "bench")
        self.torch = torch

    def ours(self, plugin: str, steps: int, eval_every: int | None = None) -> dict[str, float]:
        """One tracked run; the wall and CPU time of its training loop (``training.train``, timed from outside)."""
        from mlp_lab import training
        from mlp_lab.registry import get_registry
        from mlp_lab.runs import RunSpec, execute

        impl = get_registry().get(plugin)
        overrides = {"steps": steps, **({"eval_every": eval_every} if eval_every else {})}
        spec = RunSpec(impl, impl.model_class(), impl.hyperparams(overrides), 1337)
        loop: dict[str, float] = {}
        original = training.train

        def timed(*args: Any, **kw: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kw)
            finally:
                loop.update(loop_time_s=time.perf_counter() - wall, loop_cpu_s=time.process_time() - cpu)

        training.train = timed
        try:
            outcome = execute(spec, self.data, self.device, self.tracker, quiet=True)
        finally:
            training.train = original
        if outcome.status != "FINISHED":
            raise RuntimeError(f"mlp-lab run of {plugin} ended {outcome.status}: {outcome.error}")
        return {**outcome.metrics, **loop}

    def reference(self, module: Any, steps: int, eval_every: int) -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        r = module.train(self.plain, steps, eval_every, 1337)
        return {
            "loop_time_s": time.perf_counter() - wall,
            "loop_cpu_s": time.process_time() - cpu,
            "train_time_s": r.train_time_s,
            "eval_time_s": r.eval_time_s,
            "steps_per_s": r.steps_per_s,
            "final_train_loss": r.final_train_loss,
            "test_accuracy": r.test_accuracy,
        }

    def pair(self, plugin: str, module: Any, steps: int, eval_every: int | None) -> tuple[list[dict], list[dict], str]:
        """Both sides ``repeats`` times, alternating; and whether they computed the same numbers."""
        every = eval_every or max(1, steps // 100)
        self.ours(plugin, 20, 10)  # warm up both sides: imports, allocator, the store's first run
        self.reference(module, 20, 10)
        ours, refs = [], []
        for order in alternate(self.settings.repeats):
            for side in order:
                if side == "ours":
                    ours.append(self.ours(plugin, steps, eval_every))
                else:
                    refs.append(self.reference(module, steps, every))
            o, r = ours[-1], refs[-1]
            self.settings.log(
                f"  {plugin}: mlp-lab {o['loop_time_s']:.2f} s ({o['loop_cpu_s']:.2f} s CPU), "
                f"plain {r['loop_time_s']:.2f} s ({r['loop_cpu_s']:.2f} s CPU); "
                f"{o['steps_per_s']:.0f} vs {r['steps_per_s']:.0f} steps/s"
            )
        a, b = ours[0]["final_train_loss"], refs[0]["final_train_loss"]
        same = "same numbers" if math.isclose(a, b, rel_tol=1e-5) else f"numbers differ: final loss {a:.6g} vs {b:.6g}"
        return ours, refs, same


def tracking_case(lab: Lab, settings: Settings) -> Iterator[Row]:
    """The training loop of ``mlp-lab run --plugin scratch`` (every loss logged, evaluation every 100 steps) vs the bare loop."""
    from benchmarks import ref_scratch

    settings.log(f"tracking overhead: scratch, {settings.loop_steps} steps, evaluation every 100, {settings.repeats} repeats")
    ours, refs, same = lab.pair("scratch", ref_scratch, settings.loop_steps, 100)
    yield Row(
        f"tracking overhead: training loop, scratch, {settings.loop_steps} steps",
        min(o["loop_time_s"] for o in ours),
        min(r["loop_time_s"] for r in refs),
        "s",
        goal=1.05,
        cpu=(min(o["loop_cpu_s"] for o in ours), min(r["loop_cpu_s"] for r in refs)),
        note=same,
        samples={"mlp_lab": [o["loop_time_s"] for o in ours], "reference": [r["loop_time_s"] for r in refs]},
    )


def throughput_case(lab: Lab, settings: Settings) -> Iterator[Row]:
    """Steps per second of every registered implementation that has a plain reference, against it."""
    from mlp_lab.registry import get_registry

    refs = references()
    registered = get_registry().names()
    missing = [name for name in registered if name not in refs]
    if missing:
        settings.log(f"throughput: no plain reference for {', '.join(missing)} (not measured)")
    for name in registered:
        if name not in refs:
            continue
        settings.log(f"throughput: {name}, {settings.throughput_steps} steps, {settings.repeats} repeats")
        ours, plain, same = lab.pair(name, refs[name], settings.throughput_steps, None)
        yield Row(
            f"throughput: {name}, {settings.throughput_steps} steps",
            max(o["steps_per_s"] for o in ours),
            max(r["steps_per_s"] for r in plain),
            "steps/s",
            goal=0.95,
            at_least=True,
            note=same,
            samples={"mlp_lab": [o["steps_per_s"] for o in ours], "reference": [r["steps_per_s"] for r in plain]},
        )


# -- whole processes -------------------------------------------------------------------------------


def environment(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if settings.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(settings.threads)
    return env


def mlp_lab_command() -> list[str]:
    """The installed ``mlp-lab`` script beside this Python, as a user runs it (else ``python -m mlp_lab``)."""
    script = shutil.which("mlp-lab", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "mlp_lab"]


# A small process between the benchmark and the measured one: Linux counts the memory of a process's
# pre-exec image in its peak RSS, so a process started from this (large) one would report our size.
LAUNCHER = """
import os, sys, threading, time


def tree_kib(root):
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(child) for child in f.read().split()]
        except (OSError, StopIteration):
            pass
    return total


start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
peak, running = [0], [True]


def sample():
    while running[0]:
        peak[0] = max(peak[0], tree_kib(pid))
        time.sleep(0.05)


sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
_, status, usage = os.wait4(pid, 0)
running[0] = False
sampler.join()
wall, cpu = time.perf_counter() - start, usage.ru_utime + usage.ru_stime
with open(sys.argv[1], "w") as f:
    f.write(f"{wall} {cpu} {max(peak[0], usage.ru_maxrss)} {os.waitstatus_to_exitcode(status)}")
"""


def measure_process(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak resident memory (MiB) of a process with its children; it must succeed.

    Memory is the peak of the process's and its children's resident memory added up, sampled every
    50 ms (and no less than the largest one's own peak); CPU counts the children it waited for.
    """
    log, figures = cwd / "process.log", cwd / "process.measure"
    with open(log, "wb") as out:
        launch = [sys.executable, "-c", LAUNCHER, str(figures), *command]
        subprocess.run(launch, cwd=cwd, env=env, stdout=out, stderr=out, check=True)
    wall, cpu, rss_kib, code = figures.read_text().split()
    if int(code) != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(command)} exited {code}:\n{tail}")
    return float(wall), float(cpu), int(rss_kib) / 1024  # KiB


def end_to_end_case(settings: Settings) -> Iterator[Row]:
    """The whole ``mlp-lab run --plugin scratch`` process against the whole reference process; their peak memory.

    Beside them, the reference again logging what mlp-lab logs to MLflow by hand once trained
    (``--mlflow``): what tracking in MLflow costs without mlp-lab, so the rows show how much of
    the gap is MLflow's own.
    """
    steps = settings.loop_steps
    folder = Path(tempfile.mkdtemp(prefix="mlp-lab-bench-e2e-"))
    env = environment(settings)
    args = ["--steps", str(steps), "--device", settings.device]
    plain_store = f"sqlite:///{folder / 'plain-mlflow.db'}"
    commands = {
        "ours": [*mlp_lab_command(), "run", "--plugin", "scratch", *args],
        "ref": [sys.executable, "-m", "benchmarks.ref_scratch", *args, "--out", "plain-outputs"],  # saves figure and weights
        "tracked": [sys.executable, "-m", "benchmarks.ref_scratch", *args, "--mlflow", plain_store],
    }
    settings.log(f"end to end: mlp-lab run --plugin scratch {' '.join(args)} vs ref_scratch, alone and with --mlflow")
    warm = ["--steps", "10", "--device", settings.device]
    first, _, _ = measure_process([*mlp_lab_command(), "run", "--plugin", "scratch", *warm, "-q"], folder, env)
    measure_process([sys.executable, "-m", "benchmarks.ref_scratch", *warm, "--mlflow", plain_store], folder, env)
    settings.log(f"  the first run in a new folder (creates the MLflow store): {first:.1f} s")
    times: dict[str, list[float]] = {side: [] for side in commands}
    cpu: dict[str, list[float]] = {side: [] for side in commands}
    memory: dict[str, list[float]] = {side: [] for side in commands}
    for order in take_turns(list(commands), settings.repeats):
        for side in order:
            wall, seconds, rss = measure_process(commands[side], folder, env)
            times[side].append(wall)
            cpu[side].append(seconds)
            memory[side].append(rss)
        last = {side: f"{times[side][-1]:.2f} s ({cpu[side][-1]:.2f} s CPU) {memory[side][-1]:.0f} MiB" for side in times}
        settings.log(f"  mlp-lab {last['ours']}, plain {last['ref']}, plain logging to MLflow {last['tracked']}")
    by_hand = "; reference: plain + the same MLflow logging by hand"
    for reference, against, goal in (("ref", "", 1.15), ("tracked", by_hand, None)):
        yield Row(
            f"end to end: mlp-lab run --plugin scratch, {steps} steps{against}",
            min(times["ours"]),
            min(times[reference]),
            "s",
            goal=goal,
            cpu=(min(cpu["ours"]), min(cpu[reference])),
            note=f"store exists; the first run in a folder took {first:.1f} s" if goal else "",
            samples={"mlp_lab": times["ours"], "reference": times[reference]},
        )
    for reference, against, goal in (("ref", "", 1.5), ("tracked", by_hand, None)):
        yield Row(
            f"memory: peak resident, same processes{against}",
            max(memory["ours"]),
            max(memory[reference]),
            "MiB",
            goal=goal,
            samples={"mlp_lab": memory["ours"], "reference": memory[reference]},
        )


def startup_case(settings: Settings) -> Iterator[Row]:
    """``mlp-lab --help`` and ``mlp-lab plugins`` wall time; beside them, Python importing click and pluggy."""
    folder = Path(tempfile.mkdtemp(prefix="mlp-lab-bench-startup-"))
    env = environment(settings)
    floor_cmd = [sys.executable, "-c", "import click, pluggy"]
    for args, goal in ((["--help"], 0.5), (["plugins"], 1.0)):
        ours, floor = [], []
        for order in alternate(settings.startup_repeats):
            for side in order:
                wall, _, _ = measure_process([*mlp_lab_command(), *args] if side == "ours" else floor_cmd, folder, env)
                (ours if side == "ours" else floor).append(wall)
        settings.log(f"start-up: mlp-lab {' '.join(args)} best {min(ours):.3f} s, importing click, pluggy {min(floor):.3f} s")
        yield Row(
            f"start-up: mlp-lab {' '.join(args)} (reference: python importing click and pluggy)",
            min(ours),
            min(floor),
            "s",
            goal=goal,
            goal_on_ours=True,
            samples={"mlp_lab": ours, "reference": floor},
        )


CASES = ("tracking", "end-to-end", "startup", "throughput")
