"""``python -m benchmarks``: every case, one row each, mlp-lab against its plain-PyTorch reference."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks.cases import CASES, Lab, Row, Settings, end_to_end_case, startup_case, throughput_case, tracking_case


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short version (short loops, 2 repeats) for CI")
    parser.add_argument("--only", default=",".join(CASES), help=f"comma-separated cases among {', '.join(CASES)}")
    parser.add_argument("--repeat", type=int, help="repeats per side (default 3, --quick 2); the best is kept")
    parser.add_argument("--steps", type=int, help="steps of the tracking and end-to-end loops (default 10000, --quick 1000)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps", "auto"], help="device for the training cases")
    parser.add_argument("--threads", type=int, help="torch threads on both sides (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; known: {', '.join(CASES)}")
    return args


def machine() -> str:
    from mlp_lab.devices import cpu_name, host_memory_gb

    return f"{cpu_name()}, {os.cpu_count()} cores, {host_memory_gb()} GiB, {platform.system()} {platform.release()}"


def print_table(rows: list[Row], header: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mlp-lab benchmarks", title_justify="left", caption="\n".join(header), caption_justify="left")
    for col in ("case", "mlp-lab", "plain PyTorch", "ratio", "CPU ratio", "goal", "result"):
        table.add_column(col, justify="left" if col in ("case", "result") else "right", overflow="fold")
    for row in rows:
        fmt = lambda v: "-" if v is None else f"{v:.3g}" if v < 10 else f"{v:.0f}"  # noqa: E731
        goal = "-"
        if row.goal is not None:
            goal = ("≥ " if row.at_least else "≤ ") + (f"{row.goal} {row.unit}" if row.goal_on_ours else f"{row.goal}")
        verdict = {True: "pass", False: "MISS", None: "-"}[row.passed]
        table.add_row(
            row.case,
            f"{fmt(row.ours)} {row.unit}",
            f"{fmt(row.reference)} {row.unit}" if row.reference is not None else "-",
            f"{row.ratio:.3f}" if row.ratio is not None else "-",
            f"{row.cpu_ratio:.3f}" if row.cpu_ratio is not None else "-",
            goal,
            verdict + (f" ({row.note})" if row.note else ""),
        )
    Console(file=sys.stdout, width=160).print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    make = Settings.quick if args.quick else Settings
    settings = make(device=args.device, threads=args.threads, log=lambda s: print(s, file=sys.stderr, flush=True))
    if args.repeat:
        settings.repeats = args.repeat
    if args.steps:
        settings.loop_steps = args.steps
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = args.only.split(",")
    load_before = os.getloadavg()
    started = time.time()
    rows: list[Row] = []
    lab = Lab(settings) if {"tracking", "throughput"} & set(cases) else None
    for case in cases:
        if case == "tracking":
            rows += tracking_case(lab, settings)
        elif case == "end-to-end":
            rows += end_to_end_case(settings)
        elif case == "startup":
            rows += startup_case(settings)
        elif case == "throughput":
            rows += throughput_case(lab, settings)
    header = [
        f"Command: python -m benchmarks {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip(),
        f"Machine: {machine()}; torch {torch.__version__} with {torch.get_num_threads()} threads; device {settings.device}",
        f"Date: {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}, {time.time() - started:.0f} s; "
        f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after",
        "Each figure is the best of the repeats, the sides taking turns; ratio = mlp-lab / plain (wall time, rates, memory);",
        "CPU ratio = the same for CPU seconds of all threads, steadier than wall time on a shared machine. Goals apply to ratio.",
    ]
    print_table(rows, header)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": [r.as_dict() for r in rows]}, indent=2))
    return 1 if args.check and any(r.passed is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
