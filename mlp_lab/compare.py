"""Comparing runs side by side, read back through MLflow's search API (a local store or a tracking server).

Runs are grouped into rows by implementation and parameter set (every parameter but the seed, and
the experiment): the runs of one row differ only by seed, and each metric is shown as the mean and
the *sample* standard deviation (n - 1) across them. Only the parameters that differ between rows
are shown unless ``all_params``. Selection: the children of a comparison group (the latest, or one
by id), or every run of some experiments; narrowed by plugin and by an MLflow search filter.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException

from mlp_lab.errors import UsageError, first_line
from mlp_lab.options import read_back
from mlp_lab.tracking import (
    DEFAULT_DIR,
    check_store,
    deleted_experiment,
    quiet_mlflow_logs,
    sqlite_path,
    store_error,
)

PAGE = 1000  # runs per search page; every page is read, so there is no cap on the number of runs
KIND = "mlp_lab.kind"
PARENT = "mlflow.parentRunId"
STD_NOTE = "mean ± sample standard deviation (n-1) across the runs of a row"
RERUN_NOTE = "a seed run more than once counts once, by its latest finished run (+N reruns: the earlier ones)"
BAND_NOTE = "line: mean across runs; band: min to max"


class NothingToCompare(Exception):
    """The selection is valid but holds no runs."""


@dataclass(frozen=True)
class Column:
    """A metric shown as mean ± std: its MLflow key, its heading, and its number format."""

    key: str
    heading: str
    spec: str


METRICS = (
    Column("test_accuracy", "test acc", ".4f"),
    Column("train_accuracy", "train acc", ".4f"),
    Column("final_train_loss", "final loss", ".3g"),
    Column("train_time_s", "train s", ".3g"),
    Column("steps_per_s", "steps/s", ".3g"),
)


UNFINISHED = ("failed", "killed", "running")  # runs that did not finish; CSV and JSON count them as runs_failed, ...


@dataclass
class Record:
    """One run as read back from MLflow."""

    run_id: str
    name: str
    experiment_id: str
    experiment: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    start_time: int

    @property
    def plugin(self) -> str:
        return self.params.get("plugin", "?")

    @property
    def seed(self) -> str:
        return self.params.get("seed", "?")


@dataclass
class Row:
    """The runs of one implementation with one parameter set (seeds aside)."""

    plugin: str
    params: dict[str, str]
    records: list[Record] = field(default_factory=list)

    @property
    def finished(self) -> list[Record]:
        """The finished runs that count: one per seed, the latest (a seed run again replaces its earlier run)."""
        latest: dict[str, Record] = {}
        for r in sorted(self.records, key=lambda r: r.start_time):
            if r.status == "FINISHED":
                latest[r.seed] = r
        return sorted(latest.values(), key=lambda r: r.start_time)

    @property
    def reruns(self) -> int:
        """Finished runs left out because a later finished run has the same seed."""
        return sum(r.status == "FINISHED" for r in self.records) - len(self.finished)

    @property
    def unfinished(self) -> dict[str, int]:
        """The runs that did not finish, counted as ``failed``, ``killed`` or ``running`` (not ended yet)."""
        ended = {"FAILED": "failed", "KILLED": "killed"}
        counts = Counter(ended.get(r.status, "running") for r in self.records if r.status != "FINISHED")
        return {status: counts[status] for status in UNFINISHED if counts[status]}

    @property
    def seeds(self) -> list[str]:
        return sorted({r.seed for r in self.records}, key=_natural)

    def values(self, key: str) -> list[float]:
        return [r.metrics[key] for r in self.finished if key in r.metrics and not math.isnan(r.metrics[key])]

    def mean_std(self, key: str) -> tuple[float | None, float | None]:
        """Mean and sample standard deviation (None when there are fewer than 2 values)."""
        values = self.values(key)
        if not values:
            return None, None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None

    def param(self, name: str) -> str | None:
        if name == "seeds":
            return ",".join(self.seeds)
        return self.params.get(name)


@dataclass
class Comparison:
    """Rows sorted by mean test accuracy, and the parameter columns to show."""

    title: str
    rows: list[Row]
    columns: list[str]
    group: Record | None = None
    all_params: bool = False  # the columns are every parameter, not only those that differ
    unstarted: int = 0  # of a group stopped early (Ctrl-C, a store that failed): planned runs that never started

    @property
    def note(self) -> str:
        """What the numbers are; where some seed was run again, which of its runs counts; runs a group never started."""
        never = f"; {self.unstarted} of the group's planned runs never started" if self.unstarted else ""
        return STD_NOTE + (f"; {RERUN_NOTE}" if any(row.reruns for row in self.rows) else "") + never

    @property
    def has_curves(self) -> bool:
        """Whether the overlay figure has a line to draw: the curves are the finished runs'."""
        return any(row.finished for row in self.rows)

    # -- output --------------------------------------------------------------------------------
    def headings(self) -> list[str]:
        return ["plugin", *self.columns, "runs", *(c.heading for c in METRICS[:3]), "steps", *(c.heading for c in METRICS[3:])]

    def cells(self, row: Row) -> list[str]:
        counts = {**row.unfinished, "rerun" if row.reruns == 1 else "reruns": row.reruns}
        others = ", ".join(f"+{n} {status}" for status, n in counts.items() if n)
        runs = f"{len(row.finished)}" + (f" ({others})" if others else "")
        metric = {c.key: _mean_std_text(*row.mean_std(c.key), c.spec) for c in METRICS}
        return [
            row.plugin,
            *(row.param(p) or "-" for p in self.columns),
            runs,
            *(metric[c.key] for c in METRICS[:3]),
            row.params.get("steps", "-"),
            *(metric[c.key] for c in METRICS[3:]),
        ]

    def records(self) -> list[dict[str, Any]]:
        """One flat dict per row for CSV and JSON: metrics as numbers, parameters as MLflow's text, None where unset."""
        out = []
        for row in self.rows:
            item: dict[str, Any] = {"plugin": row.plugin, **{p: _unset_as_none(row.param(p)) for p in self.columns}}
            item |= {"runs": len(row.finished), **{f"runs_{status}": row.unfinished.get(status, 0) for status in UNFINISHED}}
            item["runs_reruns"] = row.reruns
            item["seeds"] = ",".join(row.seeds)
            for c in METRICS:
                mean, std = row.mean_std(c.key)
                item[f"{c.key}_mean"], item[f"{c.key}_std"] = mean, std
            item["steps"] = _number(row.params.get("steps"))
            item["run_ids"] = " ".join(r.run_id for r in row.records)
            out.append(item)
        return out

    def to_markdown(self) -> str:
        def esc(text: str) -> str:
            return text.replace("|", "\\|")

        heads = self.headings()
        align = ["---" if h == "plugin" or h in self.columns else "---:" for h in heads]
        lines = ["| " + " | ".join(heads) + " |", "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(esc(c) for c in self.cells(row)) + " |" for row in self.rows]
        return "\n".join(lines) + f"\n\n{self.title}; {self.note}.\n"

    def to_csv(self) -> str:
        records = self.records()
        buf = io.StringIO()
        fields = list(records[0]) if records else ["plugin"]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in rec.items()} for rec in records)
        return buf.getvalue()

    def to_json(self) -> str:
        doc = {
            "title": self.title,
            "group_run_id": self.group.run_id if self.group else None,
            "runs_unstarted": self.unstarted,  # of a stopped group: planned runs that never started
            "std": "sample standard deviation (n-1); null with fewer than 2 finished runs",
            "reruns": RERUN_NOTE.replace("+N reruns", "runs_reruns"),
            "param_columns": self.columns,
            "rows": self.records(),
        }
        return json.dumps(doc, indent=2)

    def rich_tables(self, width: int) -> list[Any]:
        """One table when it fits in ``width`` columns; else the metrics, then the differing parameters apart (rows
        numbered in both)."""
        from rich import box
        from rich.console import Console
        from rich.table import Table

        def table(headings: list[str], cells: list[list[str]], title: str | None, caption: str | None) -> Table:
            t = Table(
                title=title,
                title_justify="left",
                caption=caption,
                caption_justify="left",
                box=box.SIMPLE_HEAD,
                pad_edge=False,
                min_width=len(title or ""),
            )
            for h in headings:
                if h == "plugin":
                    t.add_column(h, no_wrap=True, min_width=max(len(r.plugin) for r in self.rows))
                else:
                    t.add_column(h, justify="left" if h in self.columns else "right", overflow="fold")
            for row in cells:
                t.add_row(*row)
            return t

        heads = self.headings()
        cells = [self.cells(row) for row in self.rows]
        whole = table(heads, cells, self.title, self.note)
        if not self.columns or Console(width=10_000).measure(whole).maximum <= width:
            return [whole]
        heads = ["#", *heads]  # rows numbered: a row of the metrics is found again among the parameters
        cells = [[str(n), *c] for n, c in enumerate(cells, 1)]

        def part(columns: list[int], title: str | None, caption: str | None = None) -> Table:
            return table([heads[i] for i in columns], [[c[i] for i in columns] for c in cells], title, caption)

        keep = [i for i, h in enumerate(heads) if h not in self.columns]
        chunks: list[list[int]] = [[]]  # the parameters in as many tables as fit (a value folds only if wider alone)
        for i in (i for i, h in enumerate(heads) if h in self.columns):
            if chunks[-1] and Console(width=10_000).measure(part([0, 1, *chunks[-1], i], None)).maximum > width:
                chunks.append([])
            chunks[-1].append(i)
        heading = "Parameters" if self.all_params else "Parameters that differ"
        titles = [heading] + [f"{heading} ({n}/{len(chunks)})" for n in range(2, len(chunks) + 1)]
        if len(chunks) > 1:
            titles[0] += f" (1/{len(chunks)})"
        return [part(keep, self.title, self.note), *(part([0, 1, *chunk], t) for chunk, t in zip(chunks, titles, strict=True))]

    def render(self, fmt: str, width: int | None = None) -> str:
        """The comparison as ``table`` (rich, for a terminal), ``markdown``, ``csv`` or ``json``."""
        if fmt == "markdown":
            return self.to_markdown()
        if fmt == "csv":
            return self.to_csv()
        if fmt == "json":
            return self.to_json() + "\n"
        from rich.console import Console

        width = width or (Console().width if sys.stdout.isatty() else 160)
        console = Console(file=io.StringIO(), width=width, force_terminal=False)
        for i, t in enumerate(self.rich_tables(width)):
            if i:
                console.print()
            console.print(t)
        return console.file.getvalue()

    def labels(self) -> dict[int, str]:
        """A legend label per row: the plugin, plus what differs between its own rows when it has several.

        A parameter that parts the rows exactly as one named before it does (``n_train`` and
        ``dataset_digest`` beside ``dataset``) is left out: it tells them apart no better. The
        experiment and the dataset come first.
        """
        out = {}
        for i, row in enumerate(self.rows):
            same = [r for r in self.rows if r.plugin == row.plugin]
            diff, parts = [], set()
            for p in sorted([*self.columns, "steps"], key=lambda p: p not in ("experiment", "dataset")):  # the telling ones first
                part = tuple(r.param(p) for r in same)
                parted = tuple(part.index(v) for v in part)  # which row each row is grouped with
                if p != "seeds" and len(set(part)) > 1 and parted not in parts:
                    diff.append(p)
                    parts.add(parted)
            out[i] = row.plugin + (f" ({', '.join(f'{p}={row.param(p)}' for p in diff)})" if diff else "")
        return out


# -- building a comparison -----------------------------------------------------------------------


def build(records: Sequence[Record], title: str, all_params: bool = False, group: Record | None = None) -> Comparison:
    """Group ``records`` into rows (plugin + parameters but the seed), sort them, pick the columns to show."""
    rows: dict[tuple, Row] = {}
    multi_experiment = len({r.experiment for r in records}) > 1
    for rec in records:
        params = {k: v for k, v in rec.params.items() if k not in ("seed", "plugin")}
        if multi_experiment or all_params:
            params = {"experiment": rec.experiment, **params}
        key = (rec.plugin, tuple(sorted(params.items())))
        rows.setdefault(key, Row(rec.plugin, params)).records.append(rec)
    ordered = sorted(rows.values(), key=_sort_key)
    names = [k for k in dict.fromkeys(k for row in ordered for k in row.params) if k != "steps"]  # steps: always shown
    if all_params:
        columns = ["seeds", *names]
    else:
        columns = [p for p in ["seeds", *names] if len({row.param(p) for row in ordered}) > 1]
    return Comparison(title, ordered, columns, group, all_params)


def _sort_key(row: Row) -> tuple:
    mean, _ = row.mean_std("test_accuracy")
    return (mean is None, -(mean or 0.0), row.plugin, sorted(row.params.items()))


# -- reading runs back ---------------------------------------------------------------------------


def store_uri(uri: str | None) -> str:
    """The store to read: ``uri``, else MLFLOW_TRACKING_URI, else ./mlruns, which must exist (never created here)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        db = DEFAULT_DIR / "mlflow.db"
        if not db.exists():
            raise UsageError(f"no MLflow store at {db} (run 'mlp-lab run' here first, or pass --tracking-uri)")
        return f"sqlite:///{db.resolve()}"
    database = sqlite_path(uri)
    if database is not None and not database.exists():
        raise UsageError(f"no MLflow store at {uri}")
    return uri


def open_client(uri: str | None) -> MlflowClient:
    """A client on the store, checked with one cheap request: a store that cannot be read is a one-line error."""
    quiet_mlflow_logs()
    resolved = store_uri(uri)
    check_store(resolved)  # a server that answers; a database that is a file
    try:
        client = MlflowClient(resolved)
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds (bad scheme, refused connection, refused file store)
        raise store_error(resolved, exc) from None
    return client


FIGURE_FORMATS = (".png", ".pdf", ".svg")


def figure_path(path: Path) -> Path:
    """Where ``--figure`` writes: a .png, .pdf or .svg (.png added to a name without a suffix) in a folder that exists."""
    if not path.suffix:
        path = path.with_suffix(".png")
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise UsageError(f"--figure {path}: the figure is written as {', '.join(FIGURE_FORMATS)}; not {path.suffix}")
    if not path.parent.is_dir():
        raise UsageError(f"--figure {path}: no such folder {path.parent}")
    return path


def experiments(client: MlflowClient, names: Iterable[str] = ()) -> dict[str, str]:
    """Experiment id -> name for ``names`` (every active experiment when none are named)."""
    names = list(dict.fromkeys(names))
    if not names:
        out, token = {}, None
        while True:
            page = _mlflow_call(client.search_experiments, ViewType.ACTIVE_ONLY, max_results=PAGE, page_token=token)
            out |= {e.experiment_id: e.name for e in page}
            token = page.token
            if not token:
                return out
    out = {}
    for name in names:
        exp = _mlflow_call(client.get_experiment_by_name, name)
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise deleted_experiment(exp, client.tracking_uri)
        if exp is None or exp.lifecycle_stage != "active":
            raise UsageError(f"no experiment named {name!r} in {client.tracking_uri}")
        out[exp.experiment_id] = exp.name
    return out


def search(client: MlflowClient, experiment_ids: dict[str, str], filter_string: str = "", what: str = "") -> Iterator[Record]:
    """Every matching run, page after page (no cap), as Records."""
    token = None
    while True:
        page = _mlflow_call(
            client.search_runs,
            list(experiment_ids),
            filter_string,
            ViewType.ACTIVE_ONLY,
            PAGE,
            None,
            token,
            what=what or f"filter {filter_string!r}",
        )
        for run in page:
            yield record(run, experiment_ids.get(run.info.experiment_id, run.info.experiment_id))
        token = page.token
        if not token:
            return


def record(run: Run, experiment: str) -> Record:
    return Record(
        run.info.run_id,
        run.info.run_name or "",
        run.info.experiment_id,
        experiment,
        run.info.status,
        read_back(run.data.params) if KIND in run.data.tags else dict(run.data.params),  # older mlp-lab runs' "None"
        dict(run.data.metrics),
        run.info.start_time or 0,
    )


def find_group(client: MlflowClient, group: str, experiment_ids: dict[str, str]) -> Record:
    """The comparison group ``group``: ``last`` (the latest in ``experiment_ids``) or a run id."""
    if group == "last":
        runs = client.search_runs(
            list(experiment_ids), f"tags.`{KIND}` = 'group'", ViewType.ACTIVE_ONLY, 1, ["attributes.start_time DESC"]
        )
        if not runs:
            where = ", ".join(repr(n) for n in experiment_ids.values()) or "the store"
            raise NothingToCompare(f"no comparison group in {where} (run 'mlp-lab run' with several plugins or seeds first)")
        run = runs[0]
    else:
        run = _group_run(client, group, experiment_ids)
        if run.data.tags.get(KIND) != "group":
            raise UsageError(f"--group {group}: run is not a comparison group (it has no child runs from 'mlp-lab run')")
    exp = client.get_experiment(run.info.experiment_id)
    if exp.lifecycle_stage == "deleted":
        raise deleted_experiment(exp, client.tracking_uri)
    if run.info.lifecycle_stage == "deleted":
        raise UsageError(f"--group {group}: the group was deleted (restore it in the MLflow UI, or 'mlflow runs restore')")
    if exp.experiment_id not in experiment_ids:
        raise UsageError(f"--group {group}: the group is in experiment {exp.name!r}, not in {_names(experiment_ids)}")
    return record(run, exp.name)


def _group_run(client: MlflowClient, group: str, experiment_ids: dict[str, str]) -> Run:
    """The run ``group`` names by id, else by name (as the group's table heading shows it; the latest of that name)."""
    try:
        return client.get_run(group)
    except MlflowException:
        pass
    runs = []
    if "'" not in group:  # group names never hold one; MLflow's filter could not quote it
        runs = _mlflow_call(
            client.search_runs,
            list(experiment_ids),
            f"attributes.run_name = '{group}' and tags.`{KIND}` = 'group'",
            ViewType.ACTIVE_ONLY,
            10,
            ["attributes.start_time DESC"],
            what=f"--group {group!r}",
        )
    if not runs:
        raise UsageError(f"--group {group}: no run of that id, nor group of that name, in {_names(experiment_ids)}")
    if len(runs) > 1:  # groups started in the same second, before names had a random part: which is meant?
        ids = ", ".join(r.info.run_id for r in runs)
        raise UsageError(f"--group {group}: {len(runs)} groups have that name; give one of their ids: {ids}")
    return runs[0]


def _names(experiment_ids: dict[str, str]) -> str:
    names = ", ".join(repr(n) for n in experiment_ids.values())
    return f"experiment{'s' if len(experiment_ids) > 1 else ''} {names}" if names else "the store"


def select(
    client: MlflowClient,
    group: str | None = None,
    experiment_names: Sequence[str] = (),
    plugins: Sequence[str] = (),
    filter_string: str = "",
    all_params: bool = False,
) -> Comparison:
    """Read the selected runs back from MLflow and compare them.

    With ``group`` (``last`` or a run id; the default when no experiment is named): that group's
    children. Otherwise every run (children and single runs, not group parents) of the experiments.
    """
    exps = experiments(client, experiment_names)
    if group is None and not experiment_names:
        group = "last"
    clauses = [f"tags.`{KIND}` = 'run'"]
    parent = None
    if group is not None:
        parent = find_group(client, group, exps)
        exps = {parent.experiment_id: parent.experiment}
        clauses.append(f"tags.`{PARENT}` = '{parent.run_id}'")
        title = f"Comparison group {parent.name} ({parent.run_id}, experiment {parent.experiment!r})"
    else:
        title = "Runs of experiment" + ("s " if len(exps) > 1 else " ") + ", ".join(repr(n) for n in exps.values())
    if filter_string.strip():
        clauses.append(filter_string)
    what = f"--filter {filter_string!r}"
    records = [r for r in search(client, exps, " and ".join(clauses), what) if not plugins or r.plugin in plugins]
    if not records:
        detail = []
        if plugins:
            detail.append("plugin " + ", ".join(plugins))
        if filter_string.strip():
            detail.append(f"filter {filter_string!r}")
        raise NothingToCompare(
            f"no runs to compare in {title[0].lower() + title[1:]}" + (f" ({'; '.join(detail)})" if detail else "")
        )
    comparison = build(records, title, all_params, parent)
    if parent is not None and not plugins and not filter_string.strip():  # the whole group: its runs never started
        comparison.unstarted = never_started(parent, len(records))
    return comparison


def never_started(group: Record, runs: int) -> int:
    """How many of a group's planned runs never started, given how many it has."""
    return max(0, int(group.metrics.get("runs_planned", runs)) - runs)


def _mlflow_call(fn: Any, *args: Any, what: str = "", **kwargs: Any) -> Any:
    """Call MLflow; a rejected argument (a bad filter) becomes one line of usage error."""
    try:
        return fn(*args, **kwargs)
    except MlflowException as exc:
        if exc.error_code == "INVALID_PARAMETER_VALUE":
            message = first_line(exc)
            if what.startswith("--filter") and "attribute key" in message:  # 'lr = 0.1': a parameter named bare
                message += "; parameters and metrics are named params.NAME, metrics.NAME (params.lr = '0.1')"
            raise UsageError(f"{what}: {message}" if what else message) from None
        raise


# -- histories and the overlay figure ------------------------------------------------------------


@dataclass
class Curve:
    """One row's metric against step: the mean across its runs and the min-max band."""

    label: str
    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    runs: int


def history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """Step -> value of metric ``key`` (the last value logged at a step wins)."""
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return {m.step: m.value for m in points}


def aggregate(label: str, histories: list[dict[int, float]]) -> Curve | None:
    """Mean, min and max across ``histories`` at the steps they all have."""
    histories = [h for h in histories if h]
    if not histories:
        return None
    steps = sorted(set.intersection(*(set(h) for h in histories)))
    values = [[h[s] for h in histories] for s in steps]
    return Curve(
        label, steps, [statistics.fmean(v) for v in values], [min(v) for v in values], [max(v) for v in values], len(histories)
    )


def curves(client: MlflowClient, comparison: Comparison, key: str) -> list[Curve]:
    labels = comparison.labels()
    out = []
    for i, row in enumerate(comparison.rows):
        curve = aggregate(labels[i], [history(client, r.run_id, key) for r in row.finished])
        if curve is not None:
            out.append(curve)
    return out


def figure(client: MlflowClient, comparison: Comparison) -> Any:
    """The overlay figure: training loss and test accuracy against step, one line per row."""
    from mlp_lab import figures

    loss = curves(client, comparison, "train_loss")
    acc = curves(client, comparison, "test_accuracy")
    datasets = sorted({r.params["dataset"] for row in comparison.rows for r in row.records if "dataset" in r.params})
    name = comparison.group.name if comparison.group else comparison.title
    return figures.comparison(loss, acc, f"{name} on {', '.join(datasets) or 'unknown data'}", BAND_NOTE)


# -- at the end of a group run -------------------------------------------------------------------


def report_group(tracker: Any, parent_id: str, out: Any = None, width: int | None = None) -> Comparison:
    """Print the group's comparison (``width`` columns wide) and log it on the parent: comparison.md, .csv and .png."""
    out = out or sys.stdout
    client: MlflowClient = tracker.client
    parent = client.get_run(parent_id)
    group = record(parent, client.get_experiment(parent.info.experiment_id).name)
    children = list(search(client, {parent.info.experiment_id: group.experiment}, f"tags.`{PARENT}` = '{parent_id}'"))
    comparison = build(children, f"Comparison group {group.name} ({parent_id})", group=group)
    comparison.unstarted = never_started(group, len(children))
    print(comparison.render("table", width), end="", file=out)
    client.log_text(parent_id, comparison.to_markdown(), "comparison.md")
    client.log_text(parent_id, comparison.to_csv(), "comparison.csv")
    if comparison.has_curves:
        client.log_figure(parent_id, figure(client, comparison), "comparison.png")
        print(f"Comparison figure: {artifact_path(parent.info.artifact_uri, 'comparison.png')}", file=out)
    return comparison


def artifact_path(artifact_uri: str, name: str) -> str:
    """A local path for an artifact in a file-system artifact store, else its URI."""
    if artifact_uri.startswith("file:"):
        from mlflow.utils.file_utils import local_file_uri_to_path

        return str(Path(local_file_uri_to_path(artifact_uri)) / name)
    return f"{artifact_uri.rstrip('/')}/{name}"


# -- helpers ---------------------------------------------------------------------------------------


def _mean_std_text(mean: float | None, std: float | None, spec: str) -> str:
    if mean is None:
        return "-"
    return _fmt(mean, spec) + ("" if std is None else f" ± {_fmt(std, '.2g' if spec.endswith('g') else spec)}")


def _fmt(value: float, spec: str) -> str:
    """``spec``, but numbers too large for its significant digits in plain digits (123, not 1.2e+02)."""
    text = format(value, spec)
    digits = re.search(r"\.(\d+)g$", spec)
    if digits and math.isfinite(value) and abs(float(text.replace(",", ""))) >= 10 ** int(digits[1]):
        return f"{value:.0f}"
    return text


def _unset_as_none(text: str | None) -> str | None:
    """A parameter as MLflow stores it (text), but None for an unset one (MLflow holds the text "None")."""
    return None if text == "None" else text


def _number(text: str | None) -> int | float | str | None:
    if text is None:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _natural(text: str) -> tuple:
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)
