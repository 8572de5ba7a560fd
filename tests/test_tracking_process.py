"""The tracking process: MLflow's work beside the training, never torch, and nothing lost when the training process dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from mlp_lab import data, model_file, tracking_process
from mlp_lab.errors import TrackingError
from mlp_lab.figures import loss_curve
from mlp_lab.registry import get_registry
from mlp_lab.summary import Evaluation, Summary
from mlp_lab.tracking import ArrayShape, Tracker

from .conftest import runs_in, subprocess_env


def test_a_run_written_by_the_tracking_process_which_never_imports_torch(store):
    dataset = data.load("tiny", None)
    impl = get_registry().get("scratch")
    model = impl.model_class()(impl.hyperparams({}))
    summary = Summary(steps=3, losses=[3.0, 2.0, 1.0], evaluations=[Evaluation(3, 1.0, 0.5, 1.1, 0.4)])
    process = tracking_process.start()
    try:
        tracker = tracking_process.RemoteTracker(process, None, "mlp-lab")
        run = tracker.start_run("remote", {"version": np.float32(1.5), "none": None}, tags={"k": 1}).ready()
        run.log_series("train_loss", summary.losses, 0)
        run.log_metrics({"test_accuracy": 0.4}, 3, now=True)
        run.log_figure(lambda: loss_curve(summary, "remote"), "loss_curve.png")  # drawn here: a lambda is fine
        example = dataset.raw_test[:4].numpy().astype("float32")
        uri = run.log_model(model_file.save(model, dataset.mean, dataset.std), example, ["torch"], 3)
        run.end()
        assert process.call(tracking_process.SERVICE, "imported", "mlflow")
        assert not process.call(tracking_process.SERVICE, "imported", "torch")
    finally:
        process.close()
    client = MlflowClient(tracker.uri)
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params == {"version": "1.5", "none": "None"} and logged.data.tags["k"] == "1"
    assert [m.value for m in client.get_metric_history(run.run_id, "train_loss")] == [3.0, 2.0, 1.0]
    assert "loss_curve.png" in [a.path for a in client.list_artifacts(run.run_id)]
    mlflow.set_tracking_uri(tracker.uri)
    expected = model.predict((dataset.raw_test[:4].float().reshape(4, -1) - dataset.mean) / dataset.std).argmax(1).numpy()
    assert (mlflow.pyfunc.load_model(uri).predict(example) == expected).all()


def test_an_error_in_the_tracking_process_is_raised_here_with_its_traceback(store):
    process = tracking_process.start()
    try:
        with pytest.raises(AttributeError, match="no such call") as caught:
            process.call(tracking_process.SERVICE, "no_such_call")
        assert "In the tracking process" in str(caught.value.__cause__)
        with pytest.raises(Exception, match="cannot pickle|Can't pickle"):
            process.call(tracking_process.SERVICE, "imported", lambda: None)  # refused here, before it is sent
        assert not process.call(tracking_process.SERVICE, "imported", "torch")  # and the process goes on
    finally:
        process.close()


def test_a_dataset_logged_from_its_shape_is_the_dataset_of_its_arrays(store):
    tracker = Tracker(None, "mlp-lab")
    x, y = np.random.default_rng(0).random((7, 784), dtype=np.float32), np.arange(7)
    runs = []
    for features, targets in ((x, y), (ArrayShape((7, 784), "float32"), ArrayShape((7,), str(y.dtype)))):
        run = tracker.start_run("datasets", {}).ready()
        run.log_dataset("d", "digest", "file:///d", features, targets, "training")
        run.end()
        runs.append(run.run_id)
    logged = [tracker.client.get_run(r).inputs.dataset_inputs[0].dataset for r in runs]
    assert logged[0].schema == logged[1].schema and logged[0].profile == logged[1].profile
    assert logged[0].digest == logged[1].digest == "digest"


def test_a_killed_training_process_leaves_its_run_killed_with_the_losses_it_sent(store, tmp_path):
    """``kill -9`` of mlp-lab: the tracking process writes what it was sent and ends the run KILLED."""
    proc = start_training(tmp_path)
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    try:
        run_id = first_loss_logged(store, client, at_least=100)  # two batches sent at least (polled: a busy machine is slow)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 60
        while time.time() < deadline and client.get_run(run_id).info.status == "RUNNING":
            time.sleep(0.5)
    finally:
        proc.kill()
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["mlp_lab.error"] == tracking_process.ABANDONED
    steps = sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))
    assert len(steps) >= 100 and steps == list(range(len(steps)))  # everything sent, in order, nothing lost


def test_a_store_that_cannot_be_opened_is_one_line_from_wait(store, tmp_path):
    """Found by MLflow in the tracking process (a file that is no database), said in one line by ``wait``."""
    from mlp_lab.tracking import StoreError

    (tmp_path / "junk.db").write_bytes(b"not a database, whatever its name says" * 100)
    uri = f"sqlite:///{tmp_path / 'junk.db'}"
    process = tracking_process.start()
    try:
        tracker = tracking_process.RemoteTracker(process, uri, "mlp-lab")
        with pytest.raises(StoreError, match=f"cannot open the MLflow store {uri}: ") as caught:
            tracker.wait()
        assert "\n" not in str(caught.value) and "not a database" in str(caught.value)
    finally:
        process.close()


def test_a_run_that_failed_to_end_cleanly_stays_failed_when_the_process_closes(store):
    process = tracking_process.start()
    try:
        tracker = tracking_process.RemoteTracker(process, None, "mlp-lab")
        run = tracker.start_run("bad-metric", {}).ready()
        run.log_series("bad!key", [1.0], 0)  # MLflow refuses the name when it is written, at the end
        with pytest.raises(Exception, match="bad!key"):
            run.end("FAILED", "it failed")
    finally:
        process.close()
    logged = MlflowClient(tracker.uri).get_run(run.run_id)
    assert logged.info.status == "FAILED" and logged.data.tags["mlp_lab.error"] == "it failed"


@pytest.mark.parametrize("seeds", [(), ("--seeds", "1,2")], ids=["one run", "a group"])
def test_when_the_tracking_process_dies_its_runs_end_failed_with_one_line(store, tmp_path, seeds):
    proc = start_training(tmp_path, *seeds)
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    try:
        run_id = first_loss_logged(store, client)
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            (tracking_pid,) = [int(p) for p in f.read().split()]
        os.kill(tracking_pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    stopped = "the tracking process stopped (exit code -9)"
    assert proc.returncode == 1 and err.strip().splitlines() == [f"Error: {stopped}"], err
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["mlp_lab.error"].count(stopped) == 1  # said once, not twice
    groups = [(r.info.status, r.data.tags["mlp_lab.error"]) for r in runs_in(store) if r.data.tags["mlp_lab.kind"] == "group"]
    assert groups == ([("FAILED", stopped)] if seeds else [])  # a group must not stay RUNNING when a run stops it
    assert len(runs_in(store)) == 1 + len(groups)  # the second seed never started


def test_a_run_deleted_while_it_trains_stops_its_group_with_one_line(store, tmp_path):
    """Someone deletes a run in the MLflow UI while it trains: its next losses cannot be written, training stops
    (a million steps would take half an hour), the run's end is refused; one line, no traceback."""
    proc = start_training(tmp_path, "--seeds", "1,2")
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    try:
        deleted = first_loss_logged(store, client)
        client.delete_run(deleted)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    (line,) = err.strip().splitlines()[-1:]
    assert "Traceback" not in err and line.startswith("Error: the MLflow store refused run scratch-s1: "), err
    assert line.endswith("(it, or its experiment, was deleted in the store meanwhile; restore it to see what it logged)")
    (group,) = [r for r in runs_in(store) if r.data.tags["mlp_lab.kind"] == "group"]
    assert group.info.status == "FAILED" and group.data.tags["mlp_lab.error"] == line.removeprefix("Error: ")
    assert (group.data.metrics["runs_planned"], group.data.metrics["runs_failed"]) == (2, 1)


@pytest.mark.parametrize("where", ["tracking process", "in process"])
@pytest.mark.parametrize("refused", ["a batch", "the run"])
def test_a_write_that_fails_is_raised_by_the_next_log_call_once(store, monkeypatch, where, refused):
    """The store refuses one batch (a bad metric name) or every write (the run was deleted in the UI)."""
    monkeypatch.setenv("MLP_LAB_METRICS_INTERVAL", "0")
    process = tracking_process.start() if where == "tracking process" else None
    try:
        tracker = tracking_process.RemoteTracker(process, None, "mlp-lab") if process else Tracker(None, "mlp-lab")
        run = tracker.start_run("doomed", {}).ready()
        if refused == "the run":
            MlflowClient(tracker.uri).delete_run(run.run_id)
        else:
            run.log_series("bad!key", [0.0], 0)
            time.sleep(0.5)  # refused on its own: the losses below come after it (a batch that holds one is refused whole)
        deadline, raised, step = time.time() + 30, None, 0
        while raised is None and time.time() < deadline:
            try:
                run.log_series("train_loss", [float(step)], step)  # queued before the error is raised: kept
            except TrackingError as exc:
                raised, raised_at = exc, step
            step += 1
            time.sleep(0.05)
        assert raised is not None and str(raised).startswith("the MLflow store could not write what run doomed logged: ")
        assert ("must be in the 'active' state" if refused == "the run" else "bad!key") in str(raised)
        run.log_series("train_loss", [float(step)], step)  # raised once: the run is ended with the reason
        if refused == "the run":
            with pytest.raises(Exception, match="active"):
                run.end("FAILED", str(raised))
            return
        run.end("FAILED", str(raised))  # reported already: not raised again
        logged = MlflowClient(tracker.uri).get_run(run.run_id)
        assert logged.info.status == "FAILED" and logged.data.tags["mlp_lab.error"] == str(raised)
        steps = sorted(m.step for m in MlflowClient(tracker.uri).get_metric_history(run.run_id, "train_loss"))
        assert steps == list(range(steps[0], step + 1))  # every loss after the refused batch was written
        assert raised_at in steps  # the losses of the call that raised too
    finally:
        if process:
            process.close()


def start_training(folder, *extra: str) -> subprocess.Popen:
    """``mlp-lab run`` as a real process, long enough to be stopped, on a store created first; its output piped."""
    Tracker(None, "mlp-lab")
    command = ["run", "--plugin", "scratch", "--steps", "1000000", "--eval-every", "50", "-q", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "mlp_lab", *command],
        cwd=folder,
        env=subprocess_env(MLP_LAB_METRICS_INTERVAL="0.5"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def first_loss_logged(store, client, at_least: int = 1) -> str:
    """The run's id, once the store has ``at_least`` losses of it."""
    deadline = time.time() + 120
    while time.time() < deadline:
        for run in runs_in(store):
            if len(client.get_metric_history(run.info.run_id, "train_loss")) >= at_least:
                return run.info.run_id
        time.sleep(0.2)
    raise AssertionError(f"the run never logged {at_least} losses")


def test_a_model_pickled_whole_by_an_earlier_version_still_loads(tmp_path):
    """Before models from code, the classifier was pickled with its model inside: such runs' models still predict."""
    from mlp_lab.pyfunc_model import DigitClassifier

    dataset = data.load("tiny", None)
    impl = get_registry().get("scratch")
    model = model_file.inference_copy(impl.model_class()(impl.hyperparams({})))
    mlflow.pyfunc.save_model(tmp_path / "old", python_model=DigitClassifier(model, dataset.mean, dataset.std))
    example = dataset.raw_test[:4].numpy().astype("float32")
    expected = model.predict((dataset.raw_test[:4].float().reshape(4, -1) - dataset.mean) / dataset.std).argmax(1).numpy()
    assert (mlflow.pyfunc.load_model(str(tmp_path / "old")).predict(example) == expected).all()


@pytest.mark.parametrize("where", ["tracking process", "in process"])
def test_an_artifact_the_store_cannot_write_is_a_tracking_error_naming_the_run(store, where):
    """What fails in the store is the store's error (a plugin's failure is reported otherwise)."""
    process = tracking_process.start() if where == "tracking process" else None
    try:
        tracker = tracking_process.RemoteTracker(process, None, "mlp-lab") if process else Tracker(None, "mlp-lab")
        run = tracker.start_run("unwritable", {}).ready()
        uri = MlflowClient(tracker.uri).get_run(run.run_id).info.artifact_uri
        artifacts = Path(urllib.request.url2pathname(urllib.parse.urlparse(uri).path))
        artifacts.parent.mkdir(parents=True)
        artifacts.write_text("a file in the way")
        for write in (lambda: run.log_text("text", "note.txt"), lambda: run.log_figure(Figure(), "figures/f.png")):
            with pytest.raises(
                TrackingError, match="^the MLflow store could not write what run unwritable logged: .*Not a directory"
            ):
                write()
        run.end("FAILED", "its artifacts could not be written")
        assert MlflowClient(tracker.uri).get_run(run.run_id).info.status == "FAILED"
    finally:
        if process:
            process.close()


def test_a_group_run_never_imports_mlflow_in_the_training_process(store, tmp_path):
    """The tracking process writes the runs and makes the group's comparison: MLflow stays out of the training process."""
    probe = (
        "import os, sys\nfrom mlp_lab.cli import main\nreal_exit = os._exit\n"
        "def leave(code):\n    print('MLFLOW', 'mlflow' in sys.modules, flush=True)\n    real_exit(code)\n"
        "os._exit = leave\n"
        "sys.argv = ['mlp-lab', 'run', '--plugin', 'scratch', '--plugin', 'autograd', '--tiny', '--steps', '5', '-q']\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.rstrip().endswith("MLFLOW False")
    assert "Comparison group compare-scratch-autograd-" in out.stdout and "Comparison figure: " in out.stdout
    (group,) = [r for r in runs_in(store) if r.data.tags["mlp_lab.kind"] == "group"]
    logged = {a.path for a in MlflowClient(f"sqlite:///{store / 'mlflow.db'}").list_artifacts(group.info.run_id)}
    assert {"comparison.md", "comparison.csv", "comparison.png"} <= logged


def test_a_tracking_process_killed_while_losses_are_sent_is_said_to_have_stopped(store):
    """The sending thread (a broken pipe) and the receiving one (end of file) both find out; they say the same."""
    Tracker(None, "mlp-lab", prepare=False)
    reasons = set()
    for attempt in range(2):
        process = tracking_process.start()
        run = tracking_process.RemoteTracker(process, None, "mlp-lab").start_run(f"r{attempt}", {}).ready()
        step = 0
        try:
            with pytest.raises(TrackingError) as stopped:
                while step < 1_000_000:
                    run.log_series("train_loss", [1.0] * 50, step)
                    step += 50
                    if step == 500:
                        os.kill(process._process.pid, signal.SIGKILL)
                    busy = time.perf_counter()
                    while time.perf_counter() - busy < 0.005:  # training, holding the GIL
                        pass
            reasons.add(str(stopped.value))
        finally:
            process.close()
    assert reasons == {"the tracking process stopped (exit code -9)"}
