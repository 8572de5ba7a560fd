"""Comparing runs: one real comparison group (every built-in plugin, two seeds, a few steps) shared by the tests.

Numbers are checked against the runs' own metrics, read independently with MlflowClient; the UI is
a real ``mlflow server`` on a free loopback port; predictions go through the logged models.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from PIL import Image

from mlp_lab import compare, data
from mlp_lab.cli import cli

from .conftest import subprocess_env

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEEDS = ("0", "1")


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


class Lab:
    """A store holding one comparison group (experiment mlp-lab) and one single run (experiment other)."""

    def __init__(self, root: Path) -> None:
        (root / "mlruns").mkdir()
        self.root = root
        self.uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
        common = ("--tiny", "--steps", "40", "--eval-every", "10", "-q", "--tracking-uri", self.uri)
        plugins = ("--plugin", "scratch", "--plugin", "autograd", "--plugin", "nn-module")
        self.group_run = invoke("run", *plugins, "--seeds", ",".join(SEEDS), *common)
        assert self.group_run.exit_code == 0, self.group_run.output
        single = invoke("run", "--plugin", "scratch", "--seed", "5", "--lr", "0.05", "--experiment", "other", *common)
        assert single.exit_code == 0, single.output
        self.client = MlflowClient(self.uri)
        exp = self.client.get_experiment_by_name("mlp-lab")
        self.group = self.client.search_runs([exp.experiment_id], "tags.`mlp_lab.kind` = 'group'")[0]
        self.children = self.client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{self.group.info.run_id}'")
        self.plugins = sorted({r.data.params["plugin"] for r in self.children})

    def compare(self, *args: str):
        return invoke("compare", "--tracking-uri", self.uri, *args)

    def compare_json(self, *args: str) -> dict:
        result = self.compare("--format", "json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Made once for the module (conftest puts MLflow's process-wide settings back around every test)."""
    return Lab(tmp_path_factory.mktemp("compare"))


def test_group_run_prints_the_comparison_and_logs_it_on_the_parent(lab):
    out = lab.group_run.stdout
    assert "Comparison group compare-" in out and "± " in out and "sample standard deviation" in out
    figure = Path(out.split("Comparison figure: ")[1].split("\n")[0].strip())
    assert figure.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.size[0] > 800
    parent = lab.group.info.run_id
    assert {f.path for f in lab.client.list_artifacts(parent)} >= {"comparison.md", "comparison.csv", "comparison.png"}
    assert figure.parent.name == "artifacts" and parent in str(figure)
    logged = lab.client.download_artifacts(parent, "comparison.csv", str(lab.root))
    rows = list(csv.DictReader(open(logged)))
    assert sorted(r["plugin"] for r in rows) == lab.plugins and {r["runs"] for r in rows} == {str(len(SEEDS))}
    assert all(child.info.run_id in out for child in lab.children)  # whole, to copy into predict --run


def test_mean_and_sample_std_match_the_runs_metrics(lab):
    doc = lab.compare_json()  # --group last is the default
    assert doc["group_run_id"] == lab.group.info.run_id
    assert [r["plugin"] for r in doc["rows"]] != [] and sorted(r["plugin"] for r in doc["rows"]) == lab.plugins
    for row in doc["rows"]:
        runs = [r for r in lab.children if r.data.params["plugin"] == row["plugin"]]
        assert row["runs"] == len(runs) == len(SEEDS) and row["runs_failed"] == 0
        assert set(row["run_ids"].split()) == {r.info.run_id for r in runs}
        for key in ("test_accuracy", "train_accuracy", "final_train_loss", "train_time_s", "steps_per_s"):
            values = np.array([r.data.metrics[key] for r in runs])
            assert row[f"{key}_mean"] == pytest.approx(values.mean(), rel=1e-9)
            assert row[f"{key}_std"] == pytest.approx(values.std(ddof=1), rel=1e-9, abs=1e-12)
        assert row["steps"] == 40 and row["seeds"] == ",".join(SEEDS)
    means = [r["test_accuracy_mean"] for r in doc["rows"]]
    assert means == sorted(means, reverse=True)


def test_only_the_parameters_that_differ_are_shown_unless_all_params(lab):
    params = [{k: v for k, v in r.data.params.items() if k not in ("seed", "plugin")} for r in lab.children]
    keys = {k for p in params for k in p}
    by_plugin = {r.data.params["plugin"]: {k: v for k, v in r.data.params.items() if k != "seed"} for r in lab.children}
    differing = {k for k in keys if len({p.get(k) for p in by_plugin.values()}) > 1}
    assert differing, "the seed plugins differ in lr and hidden at least"
    doc = lab.compare_json()
    assert set(doc["param_columns"]) == differing
    for row in doc["rows"]:
        assert all(row[k] == by_plugin[row["plugin"]].get(k) for k in differing)
    every = lab.compare_json("--all-params")
    assert set(every["param_columns"]) == keys - {"steps"} | {"seeds", "experiment"}  # steps has its own column
    assert {r["dataset_digest"] for r in every["rows"]} == {lab.children[0].data.params["dataset_digest"]}


def test_steps_is_one_right_aligned_column_even_when_it_differs():
    def rec(run_id: str, steps: str, acc: float) -> compare.Record:
        params = {"plugin": "scratch", "seed": "0", "steps": steps, "lr": "0.1"}
        return compare.Record(run_id, run_id, "1", "e", "FINISHED", params, {"test_accuracy": acc}, 0)

    comparison = compare.build([rec("a", "100", 0.8), rec("b", "200", 0.9)], "t")
    assert "steps" not in comparison.columns and comparison.headings().count("steps") == 1
    head, align, *rows = [line.strip("|").split("|") for line in comparison.to_markdown().splitlines() if line.startswith("|")]
    cell = dict(zip((h.strip() for h in head), (a.strip() for a in align), strict=True))
    assert cell["steps"] == "---:" and [r[[h.strip() for h in head].index("steps")].strip() for r in rows] == ["200", "100"]
    assert comparison.labels() == {0: "scratch (steps=200)", 1: "scratch (steps=100)"}  # the figure's legend tells them apart


def test_a_legend_label_names_what_tells_rows_apart_once():
    """Across datasets n_train, n_test and the digest part the rows as the dataset does: the label names the dataset."""

    def rec(run_id: str, dataset: str, n: str, lr: str) -> compare.Record:
        params = {"plugin": "scratch", "seed": "0", "steps": "100", "lr": lr, "n_train": n, "dataset_digest": n + "f"}
        return compare.Record(run_id, run_id, "1", "e", "FINISHED", {**params, "dataset": dataset}, {"test_accuracy": 0.5}, 0)

    comparison = compare.build(
        [rec("a", "tiny", "500", "0.1"), rec("b", "full", "60000", "0.1"), rec("c", "full", "60000", "0.2")], "t"
    )
    assert set(comparison.labels().values()) == {
        "scratch (dataset=tiny, lr=0.1)",
        "scratch (dataset=full, lr=0.1)",
        "scratch (dataset=full, lr=0.2)",
    }


def _record(run_id: str, plugin: str, params: dict[str, str], acc: float, loss: float = 1.0) -> compare.Record:
    params = {"plugin": plugin, "seed": "0", "steps": "100", **params}
    return compare.Record(run_id, run_id, "1", "e", "FINISHED", params, {"test_accuracy": acc, "final_train_loss": loss}, 0)


def test_runs_that_did_not_finish_are_counted_by_their_status():
    def rec(run_id: str, status: str) -> compare.Record:
        return dataclasses.replace(_record(run_id, "scratch", {"seed": run_id}, 0.8), status=status)

    statuses = ["FINISHED", "FINISHED", "KILLED", "FAILED", "KILLED", "RUNNING", "SCHEDULED"]
    comparison = compare.build([rec(str(i), status) for i, status in enumerate(statuses)], "t")
    (row,) = comparison.rows
    assert comparison.cells(row)[1] == "2 (+1 failed, +2 killed, +2 running)"  # scheduled: not ended either
    (item,) = json.loads(comparison.to_json())["rows"]
    counts = (item["runs"], item["runs_failed"], item["runs_killed"], item["runs_running"])
    assert counts == (2, 1, 2, 2) and item["seeds"] == "0,1,2,3,4,5,6"
    only_finished = compare.build([rec("a", "FINISHED")], "t")
    assert only_finished.cells(only_finished.rows[0])[1] == "1"


def test_a_seed_run_again_counts_once_by_its_latest_finished_run():
    def rec(run_id: str, seed: str, acc: float, start: int, status: str = "FINISHED") -> compare.Record:
        return dataclasses.replace(_record(run_id, "scratch", {"seed": seed}, acc), start_time=start, status=status)

    runs = [rec("old", "0", 0.5, 1), rec("new", "0", 0.9, 3), rec("one", "1", 0.7, 2), rec("broke", "1", 0.0, 4, "FAILED")]
    comparison = compare.build(runs, "t")
    (row,) = comparison.rows
    assert [r.run_id for r in row.finished] == ["one", "new"] and row.mean_std("test_accuracy")[0] == pytest.approx(0.8)
    assert comparison.cells(row)[1] == "2 (+1 failed, +1 rerun)"
    (item,) = json.loads(comparison.to_json())["rows"]
    assert (item["runs"], item["runs_reruns"], item["runs_failed"]) == (2, 1, 1)
    assert "counts once, by its latest finished run" in comparison.to_markdown()
    assert "counts once" not in compare.build(runs[1:], "t").to_markdown()  # said only where it happened


def test_many_differing_parameters_are_split_over_tables_without_folding_a_value():
    many = {f"param_number_{k}": "0.001" for k in range(12)}
    comparison = compare.build(
        [
            _record("a", "scratch", {**many, "init_std": "0.001"}, 0.8),
            _record("b", "nn-module", {**{k: "0.0002" for k in many}, "init_std": "1"}, 0.9),
        ],
        "t",
    )
    text = comparison.render("table", width=100)
    assert "Parameters that differ (1/3)" in text and "Parameters that differ (3/3)" in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 100
    for name in [*many, "init_std"]:  # every heading and value whole, on its own line
        assert sum(line.split().count(name) for line in text.splitlines()) == 1
    rows = [line.split() for line in text.splitlines() if line.split()[1:2] in (["scratch"], ["nn-module"])]
    assert {tuple(r[:2]) for r in rows} == {("1", "nn-module"), ("2", "scratch")}  # numbered alike in every table
    assert [cell for r in rows if r[1] == "scratch" for cell in r[2:]].count("0.001") == 13
    assert "Parameters that differ" not in comparison.render("table", width=400)  # one table when it fits
    every = compare.build(comparison.rows[0].records + comparison.rows[1].records, "t", all_params=True)
    assert "Parameters (1/" in every.render("table", width=100) and "differ" not in every.render("table", width=100)


def test_large_spreads_print_in_plain_digits_and_unset_parameters_are_null_in_json():
    assert compare._mean_std_text(1534.2, 123.4, ".3g") == "1534 ± 123"  # not 1.2e+02
    assert compare._mean_std_text(999.9, 99.7, ".3g") == "1000 ± 100"
    assert compare._mean_std_text(0.0123, 0.00042, ".3g") == "0.0123 ± 0.00042"
    comparison = compare.build([_record("a", "x", {"eval_every": "None"}, 0.8), _record("b", "y", {"eval_every": "5"}, 0.9)], "t")
    rows = json.loads(comparison.to_json())["rows"]
    assert {r["plugin"]: r["eval_every"] for r in rows} == {"x": None, "y": "5"}
    assert "None" not in comparison.to_csv()


def test_every_output_format_parses_back_to_the_same_rows(lab):
    doc = lab.compare_json()
    rows = doc["rows"]
    text = lab.compare("--format", "csv").stdout
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [r["plugin"] for r in parsed] == [r["plugin"] for r in rows]
    for got, want in zip(parsed, rows, strict=True):
        assert float(got["test_accuracy_mean"]) == pytest.approx(want["test_accuracy_mean"])
        assert float(got["test_accuracy_std"]) == pytest.approx(want["test_accuracy_std"])
        assert int(got["runs"]) == want["runs"] and got["run_ids"] == want["run_ids"]
    md = lab.compare("--format", "markdown").stdout
    table = [line for line in md.splitlines() if line.startswith("|")]
    head = [c.strip() for c in table[0].strip("|").split("|")]
    assert head[0] == "plugin" and head[1 : 1 + len(doc["param_columns"])] == doc["param_columns"]
    assert set(table[1].replace("|", "").split()) <= {"---", "---:"}
    cells = [dict(zip(head, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in table[2:]]
    assert [c["plugin"] for c in cells] == [r["plugin"] for r in rows]
    for cell, row in zip(cells, rows, strict=True):
        assert cell["test acc"] == f"{row['test_accuracy_mean']:.4f} ± {row['test_accuracy_std']:.4f}"
        assert cell["runs"] == str(row["runs"]) and cell["steps"] == "40"
    assert "sample standard deviation (n-1)" in md
    plain = lab.compare().stdout
    assert all(r["plugin"] in plain for r in rows) and f"{rows[0]['test_accuracy_mean']:.4f} ±" in plain


def test_across_experiments_plugins_filters_and_pages(lab, monkeypatch):
    doc = lab.compare_json("--experiment", "mlp-lab", "--experiment", "other", "--plugin", "scratch")
    assert [(r["experiment"], r["runs"]) for r in sorted(doc["rows"], key=lambda r: r["experiment"])] == [
        ("mlp-lab", len(SEEDS)),
        ("other", 1),
    ]
    assert doc["param_columns"] == ["seeds", "experiment", "lr"]  # steps, data, hidden... are the same
    single = next(r for r in doc["rows"] if r["experiment"] == "other")
    assert single["test_accuracy_std"] is None and single["seeds"] == "5" and single["lr"] == "0.05"
    one_seed = lab.compare_json("--filter", "params.seed = '1'")
    assert {r["runs"] for r in one_seed["rows"]} == {1} and len(one_seed["rows"]) == len(lab.plugins)
    monkeypatch.setattr(compare, "PAGE", 2)  # every page is read: no cap on the number of runs
    paged = lab.compare_json("--experiment", "mlp-lab")
    assert sum(r["runs"] for r in paged["rows"]) == len(lab.children) == len(lab.plugins) * len(SEEDS)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tracking-uri", "foo://bar"], "cannot open the MLflow store foo://bar: "),
        (["--tracking-uri", "http://127.0.0.1:9"], "cannot reach the MLflow server at http://127.0.0.1:9: "),
        (["--figure", "no/such/folder/f.png"], "--figure no/such/folder/f.png: no such folder no/such/folder"),
        (["--figure", "f.txt"], "--figure f.txt: the figure is written as .png, .pdf, .svg; not .txt"),
    ],
)
def test_store_and_figure_errors_are_one_line(lab, args, message):
    result = lab.compare(*args) if "--tracking-uri" not in args else invoke("compare", *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"Error: {message}") and result.stderr.count("\n") == 1, result.stderr


def test_a_figure_without_a_suffix_is_a_png(lab, tmp_path):
    result = lab.compare("--figure", tmp_path / "overlay")
    assert result.exit_code == 0 and f"Figure: {tmp_path / 'overlay.png'}" in result.output
    assert (tmp_path / "overlay.png").read_bytes()[:8] == PNG_SIGNATURE


def test_selection_errors_are_one_line(lab, run_cli):
    cases = [
        (("--experiment", "nope"), 2, "no experiment named 'nope'"),
        (("--filter", "params.lr ~ 1"), 2, "--filter 'params.lr ~ 1'"),
        (("--filter", "lr = 0.1"), 2, "; parameters and metrics are named params.NAME, metrics.NAME (params.lr = '0.1')"),
        (("--group", "0123456789abcdef"), 2, "--group 0123456789abcdef: no run of that id, nor group of that name, in"),
        (("--group", lab.children[0].info.run_id), 2, "is not a comparison group"),
        (("--group", lab.group.info.run_id, "--experiment", "other"), 2, "the group is in experiment 'mlp-lab', not in"),
        (("--group", "last", "--experiment", "other"), 1, "no comparison group in 'other'"),
        (("--plugin", "no-such-plugin"), 1, "no runs to compare"),
    ]
    for args, code, message in cases:
        result = lab.compare(*args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.output
    missing = run_cli("compare")  # in an empty folder: no ./mlruns, and none is created
    assert missing.exit_code == 2 and "no MLflow store" in missing.stderr and not Path("mlruns").exists()


def test_a_group_is_found_by_the_name_its_table_shows_too(lab):
    by_name = lab.compare_json("--group", lab.group.info.run_name)
    assert by_name["group_run_id"] == lab.group.info.run_id
    assert by_name == lab.compare_json("--group", lab.group.info.run_id)


def test_groups_started_in_the_same_second_have_names_of_their_own_and_an_old_shared_name_is_refused(run_cli, store):
    for _ in range(2):
        assert run_cli("run", "--plugin", "scratch", "--seeds", "0,1", "--tiny", "--steps", "2", "-q").exit_code == 0
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mlp-lab")
    groups = client.search_runs([experiment.experiment_id], "tags.`mlp_lab.kind` = 'group'")
    names = [g.info.run_name for g in groups]
    assert len(set(names)) == 2 and all(re.fullmatch(r"compare-scratch-\d{6}-[0-9a-f]{4}", n) for n in names), names
    client.set_tag(groups[1].info.run_id, "mlflow.runName", names[0])  # as two groups of one second were named before
    result = run_cli("compare", "--group", names[0])
    assert result.exit_code == 2 and result.stderr.strip() == (
        f"Error: --group {names[0]}: 2 groups have that name; give one of their ids: " + ", ".join(g.info.run_id for g in groups)
    )


def test_a_group_in_a_deleted_experiment_is_named_as_deleted(run_cli, store):
    assert run_cli("run", "--plugin", "scratch", "--seeds", "0,1", "--tiny", "--steps", "3", "-q").exit_code == 0
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mlp-lab")
    (group,) = client.search_runs([experiment.experiment_id], "tags.`mlp_lab.kind` = 'group'")
    client.delete_experiment(experiment.experiment_id)
    result = run_cli("compare", "--group", group.info.run_id)
    assert result.exit_code == 2 and "experiment 'mlp-lab' is deleted" in result.stderr, result.output


def test_compare_writes_the_overlay_figure_from_the_metric_histories(lab, tmp_path):
    out = tmp_path / "overlay.png"
    result = lab.compare("--format", "csv", "--figure", out)
    assert result.exit_code == 0 and f"Figure: {out}" in result.stderr
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(out) as image:
        image.verify()
    comparison = compare.select(lab.client)
    for curve, row in zip(compare.curves(lab.client, comparison, "test_accuracy"), comparison.rows, strict=True):
        histories = [lab.client.get_metric_history(r.run_id, "test_accuracy") for r in row.records]
        assert curve.steps == [0, 10, 20, 30, 40] and curve.runs == len(SEEDS)
        final = [max(h, key=lambda m: (m.step, m.timestamp)).value for h in histories]
        assert curve.mean[-1] == pytest.approx(statistics.fmean(final)) and curve.high[-1] == max(final)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ui_serves_the_runs_over_the_mlflow_rest_api(lab):
    port = free_port()
    cmd = [sys.executable, "-m", "mlp_lab", "ui", "--port", str(port), "--tracking-uri", lab.uri]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        body = json.dumps({"experiment_ids": [lab.group.info.experiment_id], "max_results": 100}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search", body, {"Content-Type": "application/json"}
        )
        deadline, found = time.monotonic() + 90, None
        while found is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    found = json.load(response)
            except OSError:
                time.sleep(0.5)
        assert found is not None, f"no answer on port {port}"
        ids = {r["info"]["run_id"] for r in found["runs"]}
        assert ids == {lab.group.info.run_id} | {r.info.run_id for r in lab.children}
        through_server = lab.compare_json("--tracking-uri", f"http://127.0.0.1:{port}")  # compare, via the REST API
        assert through_server["rows"] == lab.compare_json()["rows"]
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
        assert f"http://127.0.0.1:{port}" in output and "MLflow UI stopped." in output
        assert "Warning" not in output, output  # MLflow's own deprecation warnings are not the user's business
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))  # the server is gone: nothing listens on the port any more
        sock.listen()


def test_predict_on_test_images_agrees_with_the_runs_evaluation(lab, tmp_path):
    test = data.load("tiny")
    raw = test.raw_test.numpy()
    labels = test.test.y.numpy()
    np.save(tmp_path / "test.npy", raw.reshape(-1, 28, 28))
    pngs = []
    for i in range(3):
        pngs.append(tmp_path / f"digit{i}.png")
        Image.fromarray(raw[i].reshape(28, 28).astype(np.uint8)).save(pngs[-1])
    np.save(tmp_path / "flat.npy", raw[:2].astype(np.float64))
    runs = {r.data.params["plugin"]: r for r in lab.children if r.data.params["seed"] == SEEDS[0]}
    assert sorted(runs) == lab.plugins
    for plugin, run in runs.items():
        result = invoke("predict", "--tracking-uri", lab.uri, "--run", run.info.run_id, tmp_path / "test.npy", *pngs)
        assert result.exit_code == 0, (plugin, result.output)
        lines = [line.rsplit(": ", 1) for line in result.stdout.splitlines()]
        digits = np.array([int(d) for _, d in lines[: len(raw)]])
        assert [name for name, _ in lines[:2]] == [f"{tmp_path / 'test.npy'}[0]", f"{tmp_path / 'test.npy'}[1]"]
        assert (digits == labels).mean() == pytest.approx(run.data.metrics["test_accuracy"]), plugin
        assert [(name, int(d)) for name, d in lines[len(raw) :]] == [(str(p), int(digits[i])) for i, p in enumerate(pngs)]
        flat = invoke("predict", "--tracking-uri", lab.uri, "--run", run.info.run_id, tmp_path / "flat.npy")
        assert [int(line.rsplit(": ", 1)[1]) for line in flat.stdout.splitlines()] == digits[:2].tolist()


def test_predict_errors_are_one_line(lab, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((3, 27)))
    raw = data.load("tiny").raw_test[:2].numpy()
    np.save(tmp_path / "scaled.npy", raw / 255.0)  # what torchvision's ToTensor gives
    np.save(tmp_path / "standardised.npy", (raw - 33.3) / 78.6)
    np.save(tmp_path / "nan.npy", np.full((28, 28), np.nan))
    Image.new("L", (20, 20)).save(tmp_path / "small.png")
    (tmp_path / "text.png").write_text("not an image")
    good = tmp_path / "good.npy"
    np.save(good, raw[0].reshape(28, 28))
    child = lab.children[0].info.run_id
    cases = [
        ((child, tmp_path / "bad.npy"), "expected images shaped"),
        ((child, tmp_path / "scaled.npy"), "values lie between 0 and 1; expected raw grey levels 0-255 (multiply by 255)"),
        ((child, tmp_path / "standardised.npy"), "holds negative values"),
        ((child, tmp_path / "nan.npy"), "holds NaN or infinite values"),
        ((child, tmp_path / "small.png"), "image is 20x20, expected 28x28"),
        ((child, tmp_path / "text.png"), "not an image"),
        ((child, tmp_path / "missing.png"), "no such file"),
        ((child, Path("/dev/null")), "not a regular file"),
        (("0123456789abcdef", good), "no such run"),
        ((lab.group.info.run_id, good), "has no logged model"),
    ]
    for (run_id, path), message in cases:
        result = invoke("predict", "--tracking-uri", lab.uri, "--run", run_id, path)
        assert result.exit_code == 2, (path, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1


def test_predict_reads_drawings_as_mnist_and_refuses_what_it_would_misread(lab, tmp_path):
    """A dark digit on white, a drawing on a transparent background, a blank image: read right, or refused."""
    digit = data.load("tiny").raw_test[0].numpy().reshape(28, 28).astype(np.uint8)  # light on dark, as MNIST
    Image.fromarray(digit).save(tmp_path / "light.png")
    Image.fromarray(255 - digit).save(tmp_path / "dark.png")
    ink = np.zeros((28, 28, 4), dtype=np.uint8)
    ink[:, :, 3] = digit  # black strokes, their opacity the digit: a drawing app's export
    Image.fromarray(ink, "RGBA").save(tmp_path / "drawn.png")
    Image.new("L", (28, 28), 255).save(tmp_path / "blank.png")
    run_id = lab.children[0].info.run_id

    def predict(*args):
        return invoke("predict", "--tracking-uri", lab.uri, "--run", run_id, *args)

    expected = predict(tmp_path / "light.png").stdout.rsplit(": ", 1)[1]
    assert predict("--invert", tmp_path / "dark.png").stdout.rsplit(": ", 1)[1] == expected
    assert predict(tmp_path / "drawn.png").stdout.rsplit(": ", 1)[1] == expected
    refused = [
        (("dark.png",), "a dark digit on a light background (its border is light): add --invert"),
        (("--invert", "light.png"), "it is light on dark already: leave out --invert"),
        (("--invert", "drawn.png"), "its background is transparent, so the drawing is read as the digit"),
        (("blank.png",), "the image is blank (all grey level 255)"),
    ]
    for args, message in refused:
        result = predict(*args[:-1], tmp_path / args[-1])
        assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.output


def test_grey_level_check_accepts_raw_images_and_says_what_is_wrong_with_others(tmp_path):
    from mlp_lab.errors import UsageError
    from mlp_lab.predict import check_grey_levels

    path = tmp_path / "x.npy"
    raw = data.load("tiny").raw_test[:3].numpy().astype(np.float32)
    for fine in (raw, np.zeros((2, 784)), np.full(784, 255.0), np.eye(28).reshape(1, 784) * 255):  # black, white, 0/255
        check_grey_levels(path, np.asarray(fine, dtype=np.float32))
    wrong = [
        (raw / 255, "values lie between 0 and 1"),
        (np.eye(28).reshape(1, 784), "values are only 0 and 1 \\(a binarised image\\?\\); expected raw grey levels 0-255"),
        ((raw > 127).astype(np.float32), "values are only 0 and 1"),
        (raw - 30, "holds negative values"),
        (raw * 257, "values reach 65535; expected raw 8-bit"),
        (np.where(raw > 0, np.inf, 0), "NaN or infinite"),
    ]
    for rows, message in wrong:
        with pytest.raises(UsageError, match=message):
            check_grey_levels(path, rows.astype(np.float32))


def test_ui_usage_errors_come_before_mlflow_starts(lab):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke("ui", "--port", port, "--tracking-uri", lab.uri)
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    server = invoke("ui", "--tracking-uri", "http://127.0.0.1:9")
    assert server.exit_code == 2 and "is a tracking server already" in server.stderr
    assert invoke("ui", "--port", "70000").exit_code == 2


BROKEN = """
import torch
from mlp_lab import Model, hookimpl


class Broken(Model):
    def __init__(self, hp):
        super().__init__(hp)
        self.w = torch.zeros(784, 10, requires_grad=True)

    def parameters(self):
        return {"w": self.w}

    def predict(self, x):
        return x @ self.w

    def loss(self, batch):
        return ((self.predict(batch.x) - batch.onehot) ** 2).sum()

    def train_step(self, batch, step):
        if step == 3:
            raise RuntimeError("boom at step 3")
        return self.loss(batch).detach()


@hookimpl
def register_implementations(register):
    register("broken", "Fails at step 3.", Broken)
"""


def test_a_failed_child_is_counted_and_sorted_last(plugin_dist, run_cli):
    plugin_dist("broken-mlp", "broken_mlp", BROKEN)
    result = run_cli("run", "--plugin", "broken", "--plugin", "scratch", "--tiny", "--steps", "6", "-q")
    assert result.exit_code == 1 and "boom at step 3" in result.stderr
    assert "Comparison figure: " in result.stdout  # the finished run still makes a figure
    md = run_cli("compare", "--format", "markdown").stdout
    rows = [line for line in md.splitlines() if line.startswith("| ")][2:]
    assert rows[0].startswith("| scratch |") and rows[1].startswith("| broken |")
    assert "| 0 (+1 failed) | - | - | - |" in rows[1]
    doc = json.loads(run_cli("compare", "--format", "json").stdout)
    assert [(r["plugin"], r["runs"], r["runs_failed"], r["test_accuracy_mean"]) for r in doc["rows"]][1] == ("broken", 0, 1, None)


@pytest.mark.parametrize("command", ["compare", "ui", "predict"])
def test_help_imports_neither_torch_nor_mlflow(command):
    from .test_startup import PROBE

    probe = PROBE.format(args=[command, "--help"])
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=subprocess_env())
    assert "CODE 0" in out.stdout and "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_a_figure_of_runs_none_of_which_finished_is_not_written_blank(run_cli, store, tmp_path):
    from mlp_lab.tracking import Tracker

    tracker = Tracker(None, "mlp-lab")
    client = tracker.client
    run = client.create_run(tracker.experiment_id, tags={"mlp_lab.kind": "run"})
    client.log_param(run.info.run_id, "plugin", "scratch")
    client.log_metric(run.info.run_id, "train_loss", 3.0, step=0)
    client.set_terminated(run.info.run_id, "KILLED")
    result = run_cli("compare", "--experiment", "mlp-lab", "--figure", tmp_path / "f.png")
    assert result.exit_code == 1 and "0 (+1 killed)" in result.stdout
    assert result.stderr.strip().endswith("none of these runs finished, so there is no curve to draw; not written")
    assert not (tmp_path / "f.png").exists()


def test_a_group_interrupted_while_its_comparison_is_made_ends_killed_not_finished(store, monkeypatch):
    """A FINISHED group always has its comparison: the parent ends only once it is logged."""
    import torch

    from mlp_lab import groups
    from mlp_lab.registry import get_registry
    from mlp_lab.runs import RunSpec
    from mlp_lab.tracking import Tracker

    tracker = Tracker(None, "mlp-lab")
    impl = get_registry().get("scratch")
    specs = [RunSpec(impl, impl.model_class(), impl.hyperparams({"steps": 2}), seed) for seed in (0, 1)]
    group, outcomes = groups.execute_group(specs, data.load("tiny"), torch.device("cpu"), tracker, quiet=True)
    assert tracker.client.get_run(group.run_id).info.status == "RUNNING"  # until its comparison is logged

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tracker, "report_group", interrupted)
    with pytest.raises(KeyboardInterrupt):
        groups.finish(tracker, group, outcomes)
    parent = tracker.client.get_run(group.run_id)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["mlp_lab.error"] == "interrupted (Ctrl-C) while its comparison was made"
    assert {tracker.client.get_run(o.run_id).info.status for o in outcomes} == {"FINISHED"}


def test_a_group_stopped_early_says_how_many_of_its_runs_never_started(run_cli, store):
    from mlp_lab.tracking import Tracker

    tracker = Tracker(None, "mlp-lab")
    client = tracker.client
    group = client.create_run(tracker.experiment_id, tags={"mlp_lab.kind": "group"}, run_name="compare-stopped")
    client.log_metric(group.info.run_id, "runs_planned", 3, step=0)
    child = client.create_run(
        tracker.experiment_id, tags={"mlp_lab.kind": "run", "mlflow.parentRunId": group.info.run_id}, run_name="scratch-s0"
    )
    for key, value in (("plugin", "scratch"), ("seed", "0")):
        client.log_param(child.info.run_id, key, value)
    client.log_metric(child.info.run_id, "test_accuracy", 0.5, step=1)
    client.set_terminated(child.info.run_id, "FINISHED")
    client.set_terminated(group.info.run_id, "KILLED")
    shown = run_cli("compare", "--group", group.info.run_id)
    assert shown.exit_code == 0 and "2 of the group's planned runs never started" in " ".join(shown.stdout.split())
    assert json.loads(run_cli("compare", "--group", group.info.run_id, "--format", "json").stdout)["runs_unstarted"] == 2
    only = json.loads(run_cli("compare", "--group", group.info.run_id, "--plugin", "scratch", "--format", "json").stdout)
    assert only["runs_unstarted"] == 0  # a part of the group: which of its runs are missing is not known


def test_a_plugin_asked_for_that_has_no_runs_there_is_noted(lab):
    result = lab.compare("--plugin", "scratch", "--plugin", "relu")
    assert result.exit_code == 0 and "scratch" in result.stdout
    assert result.stderr.strip() == (
        f"Note: no runs of relu in comparison group {lab.group.info.run_name} ({lab.group.info.run_id}, experiment 'mlp-lab')"
    )
    assert lab.compare("--plugin", "scratch").stderr == ""
