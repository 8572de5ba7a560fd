"""Tracked runs: what one run logs, failures, non-finite losses, Ctrl-C, determinism."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from mlp_lab import data

from .conftest import runs_in, subprocess_env

FAULTY = """
import math
import torch
from mlp_lab import Option, hookimpl
from mlp_lab_plugins.scratch import Scratch

class Faulty(Scratch):
    def train_step(self, batch, step):
        if self.hp.how == "diverge" and step == 9:  # a finite loss, then parameters past float32's range
            loss = super().train_step(batch, step)
            self.p["w2"].fill_(math.inf)
            return loss
        if step == self.hp.fail_at:
            if self.hp.how == "raise":
                raise RuntimeError("planted failure")
            if self.hp.how == "interrupt":
                raise KeyboardInterrupt
            if self.hp.how == "nan":
                return torch.tensor(math.nan)
        return super().train_step(batch, step)

@hookimpl
def register_implementations(register):
    register("faulty", "Scratch that fails on purpose.", Faulty, defaults={"steps": 40, "eval_every": 10},
             options=[Option("init_std", float, 1e-3), Option("target_scale", float, 0.9),
                      Option("decay_at", int, 5000), Option("decay", float, 0.1),
                      Option("fail_at", int, 5), Option("how", str, "raise", choices=("raise", "nan", "interrupt", "diverge"))])
"""


def client(store) -> MlflowClient:
    return MlflowClient(f"sqlite:///{store / 'mlflow.db'}")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One real scratch run of 200 steps, evaluated every 50, in its own store."""
    from click.testing import CliRunner

    from mlp_lab.cli import cli

    folder = tmp_path_factory.mktemp("finished")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(
            cli,
            ["run", "--plugin", "scratch", "--steps", "200", "--eval-every", "50"],
            prog_name="mlp-lab",
            env={"MLFLOW_TRACKING_URI": None},  # ./mlruns, whatever the session's environment says
        )
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith("See them with: mlp-lab ui")  # the default store: no --tracking-uri needed
    (run,) = runs_in(folder / "mlruns")
    return folder / "mlruns", run, result


def test_run_logs_params_dataset_and_versions(finished):
    store, run, _ = finished
    p = run.data.params
    assert run.info.status == "FINISHED"
    assert {k: p[k] for k in ("plugin", "plugin_distribution", "seed", "steps", "lr", "hidden", "eval_every")} == {
        "plugin": "scratch",
        "plugin_distribution": "mlp-lab",
        "seed": "1337",
        "steps": "200",
        "lr": "0.1",
        "hidden": "50",
        "eval_every": "50",
    }
    for key in (
        "plugin_version",
        "mlp_lab_version",
        "torch_version",
        "device",
        "device_name",
        "init_std",
        "decay_at",
        "batch_size",
    ):
        assert key in p
    assert (p["dataset"], p["n_train"], p["n_test"]) == ("mnist-default-1000-1000", "1000", "1000")
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"mnist-default-1000-1000-training", "mnist-default-1000-1000-evaluation"}
    assert {i.dataset.digest for i in inputs.values()} == {p["dataset_digest"]}


def test_run_logs_every_step_and_every_evaluation(finished):
    store, run, _ = finished
    c = client(store)
    losses = c.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in losses) == list(range(200))
    assert losses[0].value > losses[-1].value
    acc = c.get_metric_history(run.info.run_id, "test_accuracy")
    assert sorted(m.step for m in acc) == [0, 50, 100, 150, 200]
    m = run.data.metrics
    for key in (
        "train_accuracy",
        "test_accuracy",
        "test_loss",
        "train_eval_loss",
        "final_train_loss",
        "train_time_s",
        "steps_per_s",
    ):
        assert np.isfinite(m[key]), key
    assert 0.5 < m["test_accuracy"] <= 1.0


def test_run_logs_loss_curve_and_a_model_predicting_raw_pixels(finished):
    store, run, _ = finished
    c = client(store)
    names = [a.path for a in c.list_artifacts(run.info.run_id)]
    assert "loss_curve.png" in names
    png = c.download_artifacts(run.info.run_id, "loss_curve.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    d = data.load()
    digits = model.predict(d.raw_test.numpy().astype("float32"))
    accuracy = float((digits == d.test.y.numpy()).mean())
    assert accuracy == pytest.approx(run.data.metrics["test_accuracy"])
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MLflow hands a table's values over read-only: no warning about it from torch
        assert (model.predict(pd.DataFrame(d.raw_test.numpy()[:20].astype("float32"))) == digits[:20]).all()
    scaled = (d.raw_test.numpy()[:20] / 255).astype("float32")  # the commonest slip: silently read as black images
    with pytest.raises(Exception, match="model input: values lie between 0 and 1; expected raw grey levels 0-255"):
        model.predict(scaled)


def test_the_logged_model_carries_the_final_metrics(finished):
    """MLflow's Models view shows the metrics at the step the model was logged: the last one."""
    store, run, _ = finished
    (logged,) = client(store).search_logged_models(experiment_ids=[run.info.experiment_id])
    assert logged.source_run_id == run.info.run_id
    metrics = {m.key: m for m in logged.metrics}
    assert {m.step for m in metrics.values()} == {200}
    assert metrics["test_accuracy"].value == pytest.approx(run.data.metrics["test_accuracy"])
    assert metrics["final_train_loss"].value == pytest.approx(run.data.metrics["final_train_loss"])


def test_same_seed_same_numbers_other_seed_other_numbers(run_cli, store):
    for seed in (3, 3, 4):
        assert run_cli("run", "--plugin", "nn-module", "--steps", "30", "--seed", str(seed), "--tiny", "-q").exit_code == 0
    c = client(store)
    histories = {}
    for run in runs_in(store):
        values = [m.value for m in sorted(c.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)]
        histories.setdefault(run.data.params["seed"], []).append(values)
        assert run.data.params["eval_every"] == "1"  # what ran: a hundredth of 30 steps, at least 1
    assert histories["3"][0] == histories["3"][1]
    assert histories["4"][0] != histories["3"][0]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("raise", "RuntimeError: planted failure"),
        ("nan", "the training loss became nan at step 5"),
        ("diverge", "Diverged: training diverged: parameter w2 is NaN or infinite after step 10 (a lower lr?)"),
    ],
)
def test_a_failing_plugin_ends_its_run_failed_and_others_go_on(how, expected, run_cli, store, plugin_dist):
    plugin_dist("faulty-plugin", "faulty_mod", FAULTY)
    result = run_cli("run", "--plugin", "faulty", "--plugin", "scratch", "--steps", "40", "-p", f"how={how}", "-q")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    runs = {r.data.params.get("plugin"): r for r in runs_in(store)}
    bad, good = runs["faulty"], runs["scratch"]
    assert bad.info.status == "FAILED" and good.info.status == "FINISHED"
    error = bad.data.tags["mlp_lab.error"]
    assert expected in error and "faulty-plugin" in error and "'faulty'" in error
    assert expected in result.stderr
    kept = client(store).get_metric_history(bad.info.run_id, "train_loss")
    assert len(kept) == (5 if how == "raise" else 10)  # nan, and NaN scores, are found when the interval ends
    assert "error.txt" in [a.path for a in client(store).list_artifacts(bad.info.run_id)]
    group = runs[None]
    assert group.data.metrics["runs_succeeded"] == 1 and group.data.metrics["runs_failed"] == 1


@pytest.mark.parametrize(
    ("sig", "code", "reason"),
    [(signal.SIGINT, 130, "interrupted (Ctrl-C)"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_or_sigterm_ends_the_run_killed_with_its_metrics(store, tmp_path, sig, code, reason):
    """A real SIGINT (Ctrl-C) or SIGTERM (kill, timeout, a job scheduler) to a real process, once the run has logged losses."""
    from mlp_lab.tracking import Tracker

    Tracker(None, "mlp-lab")  # create the store first: two processes must not both create its tables
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlp_lab", "run", "--plugin", "scratch", "--steps", "1000000", "--eval-every", "50"],
        cwd=tmp_path,
        env=subprocess_env(MLP_LAB_METRICS_INTERVAL="0.5"),  # losses written while it trains
        # as a terminal's Ctrl-C finds it, even when this test runs in a background job (where SIGINT is ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        run_id = None
        while time.time() < deadline:
            runs = runs_in(store)
            if runs and client(store).get_metric_history(runs[0].info.run_id, "train_loss"):
                run_id = runs[0].info.run_id
                break
            time.sleep(0.5)
        assert run_id, "the run never logged a loss"
        time.sleep(1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    run = client(store).get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["mlp_lab.error"] == reason
    steps = sorted(m.step for m in client(store).get_metric_history(run_id, "train_loss"))
    assert len(steps) >= 50 and steps == list(range(len(steps)))
    said = f"Run scratch-s1337 ({run_id}) ended KILLED after {len(steps)} of 1000000 steps; what it logged is kept."
    assert said in err.splitlines()


def test_output_nobody_reads_any_more_stops_neither_training_nor_logging(store, tmp_path):
    """``mlp-lab run ... 2>&1 | head``: the reader goes away; the progress lines stop, the runs finish."""
    from mlp_lab.tracking import Tracker

    Tracker(None, "mlp-lab", prepare=False)
    read, write = os.pipe()
    os.close(read)  # a reader that has gone
    command = [sys.executable, "-m", "mlp_lab", "run", "--plugin", "scratch", "--seeds", "0,1", "--tiny", "--steps", "40"]
    buffered = {k: v for k, v in subprocess_env().items() if k != "PYTHONUNBUFFERED"}  # as in a terminal's shell

    def check(done: subprocess.CompletedProcess | subprocess.Popen, stderr: bytes | None) -> None:
        said = [line for line in (stderr or b"").decode().splitlines() if "Error" in line or "Traceback" in line]
        assert done.returncode == 0 and said == [], said  # no error: the exit code is the runs'

    try:
        for stderr in (write, subprocess.PIPE):  # both gone (2>&1 | head), or only stdout (| head)
            done = subprocess.run(command, cwd=tmp_path, env=buffered, stdout=write, stderr=stderr, timeout=300)
            check(done, done.stderr)
    finally:
        os.close(write)
    head = subprocess.Popen(command, cwd=tmp_path, env=buffered, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head.stdout.readline()  # | head -1: the reader leaves once the table has begun, before the comparison
    head.stdout.close()
    check(head, head.communicate(timeout=300)[1])
    client_ = client(store)
    for run in runs_in(store):
        assert (run.info.status, run.data.tags.get("mlp_lab.error")) == ("FINISHED", None), run.info.run_name
        if run.data.tags["mlp_lab.kind"] == "group":  # its comparison logged all the same
            assert {a.path for a in client_.list_artifacts(run.info.run_id)} >= {"comparison.md", "comparison.png"}
    assert len(runs_in(store)) == 9


def test_progress_counts_steps_per_second_of_training_as_the_logged_rate_does(capsys):
    from mlp_lab.progress import Progress

    progress = Progress("scratch-s0", 100)  # not a terminal here: plain lines on stderr
    progress.update(100, 0.5, train_seconds=4.0)  # however long evaluations took besides
    assert capsys.readouterr().err == "scratch-s0: step 100/100  loss 0.5  25 steps/s\n"


def test_full_batch_can_be_asked_for_by_name(run_cli, store):
    """A mini-batch variant back to the whole training set each step: --batch-size full, or -p batch_size=full."""
    for how in (["--batch-size", "full"], ["-p", "batch_size=Full"]):
        result = run_cli("run", "--plugin", "dropout", *how, "--tiny", "--steps", "3", "-q")
        assert result.exit_code == 0, result.output
    assert [r.data.params["batch_size"] for r in runs_in(store)] == ["full", "full"]  # the word -p reads back
    bad = run_cli("run", "--plugin", "dropout", "--batch-size", "all", "--tiny", "--steps", "3")
    assert (bad.exit_code, bad.stderr.strip()) == (2, "Error: dropout: batch_size must be int or 'full', got 'all'")


def test_an_option_only_some_of_the_plugins_have_is_said_to_pass_the_others_by(run_cli, store):
    result = run_cli("run", "--plugin", "scratch", "--plugin", "relu", "-p", "dropout=0.5",
                     "-p", "init-std=0.01", "-p", "lr=0.05", "--tiny", "--steps", "3", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "Note: scratch has no option dropout, so runs without it",
        "Note: relu has no option init_std, so runs without it",
    ]  # lr: every implementation's
    params = {r.data.params["plugin"]: r.data.params for r in runs_in(store) if "plugin" in r.data.params}
    assert (params["relu"]["dropout"], params["scratch"]["init_std"], params["relu"]["lr"]) == ("0.5", "0.01", "0.05")
    assert "dropout" not in params["scratch"] and "init_std" not in params["relu"]


def test_runs_that_logged_full_batch_as_none_compare_with_todays(run_cli, store):
    """Runs made before "full" was logged hold the text "None" (and, older still, eval_every "None" for
    steps // 100): compare groups them with today's, shown as today's are."""
    import json

    made = run_cli("run", "--plugin", "relu", "--tiny", "--steps", "3", "--seed", "1", "-q")  # full batch, steps // 100
    assert made.exit_code == 0, made.output
    (new,) = runs_in(store)
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    old = client.create_run(new.info.experiment_id, tags={"mlp_lab.kind": "run"}, run_name="relu-s2")
    for key, value in {**new.data.params, "seed": "2", "batch_size": "None", "eval_every": "None"}.items():
        client.log_param(old.info.run_id, key, value)
    for key, value in new.data.metrics.items():
        client.log_metric(old.info.run_id, key, value)
    client.set_terminated(old.info.run_id)
    rows = json.loads(run_cli("compare", "--experiment", "mlp-lab", "--format", "json").stdout)["rows"]
    assert [(r["runs"], r["seeds"]) for r in rows] == [(2, "1,2")]
    table = run_cli("compare", "--experiment", "mlp-lab", "--all-params", "--format", "markdown").stdout
    assert "None" not in table and "| full |" in table


MUTATES_HP = """
from mlp_lab import Option, hookimpl
from mlp_lab_plugins.scratch import Scratch
from mlp_lab_plugins.seed import TANH_MSE

class MutatesHp(Scratch):
    def __init__(self, hp):
        hp.values["steps"], hp.values["lr"] = 7, 123.0  # a plugin's own business: it must not reach the core
        super().__init__(hp)

@hookimpl
def register_implementations(register):
    register("mutates-hp", "Scratch that rewrites hp.values.", MutatesHp,
             options=TANH_MSE + (Option("decay_at", int, 5000), Option("decay", float, 0.1)))
"""


def test_a_model_that_rewrites_its_hyperparameters_changes_neither_its_budget_nor_the_next_seeds(run_cli, store, plugin_dist):
    plugin_dist("mutates-hp-plugin", "mutates_hp_mod", MUTATES_HP)
    result = run_cli("run", "--plugin", "mutates-hp", "--tiny", "--steps", "12", "--seeds", "0,1", "-q")
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = [r for r in runs_in(store) if r.data.tags.get("mlp_lab.kind") == "run"]
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    for run in runs:
        assert (run.data.params["steps"], run.data.params["lr"]) == ("12", "0.1")
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 12
