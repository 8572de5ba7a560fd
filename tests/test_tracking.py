"""The metrics writer: metrics gather in memory during training and reach the store on time, all of them."""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from mlp_lab.errors import UsageError
from mlp_lab.tracking import Tracker, metrics_interval
from tests.conftest import runs_in


def history(tracker: Tracker, run_id: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(tracker.uri).get_metric_history(run_id, "train_loss"))


def wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_metrics_wait_for_the_interval_then_flush_writes_them_all(store, monkeypatch):
    monkeypatch.setenv("MLP_LAB_METRICS_INTERVAL", "60")
    tracker = Tracker(None, "writer")
    run = tracker.start_run("held", {"a": 1}).ready()
    for first in range(0, 3000, 100):
        run.log_series("train_loss", [float(first + i) for i in range(100)], first)
    time.sleep(1.0)
    assert history(tracker, run.run_id) == []  # held in memory: training is not slowed by the store
    run.push()
    assert wait_for(lambda: len(history(tracker, run.run_id)) == 3000)
    run.log_series("train_loss", [1.0, 2.0], 3000)
    run.end()
    assert history(tracker, run.run_id) == list(range(3002))
    assert MlflowClient(tracker.uri).get_run(run.run_id).info.status == "FINISHED"


def test_a_short_interval_writes_while_training_goes_on(store, monkeypatch):
    monkeypatch.setenv("MLP_LAB_METRICS_INTERVAL", "0.2")
    tracker = Tracker(None, "writer")
    run = tracker.start_run("live", {"a": 1}).ready()
    run.log_series("train_loss", [0.5] * 10, 0)
    assert wait_for(lambda: len(history(tracker, run.run_id)) == 10)
    run.end()


@pytest.mark.parametrize(
    "value, expected", [("", 30.0), ("0", 0.0), ("2.5", 2.5), ("-1", 0.0), ("inf", 86_400.0), ("1e10", 86_400.0)]
)
def test_metrics_interval_setting(value, expected, monkeypatch):
    monkeypatch.setenv("MLP_LAB_METRICS_INTERVAL", value)
    assert metrics_interval() == expected


@pytest.mark.parametrize("value", ["soon", "nan"])
def test_a_bad_metrics_interval_is_a_usage_error(monkeypatch, value):
    monkeypatch.setenv("MLP_LAB_METRICS_INTERVAL", value)
    with pytest.raises(UsageError, match="MLP_LAB_METRICS_INTERVAL must be a number"):
        metrics_interval()


def test_an_endless_metrics_interval_writes_the_losses_when_training_ends(store):
    """``inf`` used to overflow the writer's clock and leave the run hanging, deaf to Ctrl-C, for good."""
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    command = [sys.executable, "-m", "mlp_lab", "run", "--plugin", "scratch", "--tiny", "--steps", "3", "-q"]
    env = subprocess_env(MLP_LAB_METRICS_INTERVAL="inf")
    result = subprocess.run(command, cwd=store.parent, env=env, capture_output=True, text=True, timeout=120)  # not for ever
    assert result.returncode == 0, result.stderr
    (run,) = runs_in(store)
    losses = MlflowClient(f"sqlite:///{store / 'mlflow.db'}").get_metric_history(run.info.run_id, "train_loss")
    assert run.info.status == "FINISHED" and sorted(m.step for m in losses) == [0, 1, 2]


def test_the_artifact_check_writes_nothing_that_stays_and_creates_no_folder(tmp_path):
    from mlp_lab.tracking import check_artifact_location

    check_artifact_location((tmp_path / "not" / "yet").as_uri())  # its parent can be written: fine, and not made
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "made").mkdir()
    check_artifact_location(str(tmp_path / "made"))
    assert list((tmp_path / "made").iterdir()) == []
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError, match=f"cannot write artifacts in {tmp_path / 'afile' / 'x'}: .*is a file"):
        check_artifact_location((tmp_path / "afile" / "x").as_uri())
    check_artifact_location("mlflow-artifacts:/1/abc/artifacts")  # the server's to check


def test_opening_a_store_in_process_fails_as_a_store_error_too(store):
    """The kit and the GPU benchmark open the store in their own process: the same one-line error as run's."""
    from mlp_lab.tracking import StoreError

    store.mkdir()
    (store / "artifacts").write_text("not a folder")
    with pytest.raises(StoreError, match=r"^cannot open the MLflow store sqlite:///.*: cannot write artifacts in .*artifacts"):
        Tracker(None, "in-process")


def test_a_sqlite_uri_names_its_database_file_without_the_query():
    from pathlib import Path

    from mlp_lab.compare import store_uri
    from mlp_lab.tracking import sqlite_path

    assert sqlite_path("sqlite:////tmp/x/mlflow.db?timeout=30") == Path("/tmp/x/mlflow.db")
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path("http://127.0.0.1:5000") is None
    with pytest.raises(UsageError, match="no MLflow store at"):
        store_uri("sqlite:////no/such/mlflow.db?timeout=30")


def test_compare_reads_a_store_named_with_a_query(run_cli, store):
    assert run_cli("run", "--plugin", "scratch", "--tiny", "--steps", "3", "-q").exit_code == 0
    uri = f"sqlite:///{store / 'mlflow.db'}?timeout=30"
    result = run_cli("compare", "--experiment", "mlp-lab", "--format", "csv", "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("plugin,") and "scratch" in result.stdout


def test_an_experiment_is_one_folder_under_the_artifact_root_whatever_its_name(tmp_path):
    from mlp_lab.tracking import _experiment_artifacts, default_artifact_root

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    root = default_artifact_root(uri)
    assert _experiment_artifacts(uri, "mlp-lab") == f"{root}/mlp-lab"
    folders = {name: _experiment_artifacts(uri, name).removeprefix(f"{root}/") for name in ("../../esc", "a/b c", "..", "a/b_c")}
    assert all("/" not in f and f.strip(".") for f in folders.values()), folders
    assert folders["../../esc"].startswith("esc-") and len(set(folders.values())) == 4  # distinct names stay apart


def test_ctrl_c_while_a_store_opens_in_process_stays_ctrl_c(store, monkeypatch):
    from mlflow import MlflowClient as Client

    def interrupted(self, name):
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "get_experiment_by_name", interrupted)
    with pytest.raises(KeyboardInterrupt):  # not a StoreError: pytest (the kit) and benchmarks.gpu stop as asked
        Tracker(None, "interrupted")


@pytest.mark.parametrize("delay", [0.4, 1.4])
def test_a_store_killed_while_its_tables_are_made_leaves_nothing_that_breaks_the_next_run(store, delay):
    """MLflow makes a new store's tables in some thirty commits; ``kill -9`` among them left, about one time
    in two, a store that no run could open ("table ... already exists"). The tables are made aside and renamed."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    store.mkdir()
    database = store / "mlflow.db"

    def partial() -> bool:
        return any(p.name.startswith(".mlflow.db.creating-") for p in store.iterdir())

    code = "from mlp_lab.tracking import Tracker; Tracker(None, 'cut-short', prepare=False)"
    child = subprocess.Popen([sys.executable, "-c", code], cwd=store.parent, env=subprocess_env())
    try:
        assert wait_for(lambda: partial() or database.exists() or child.poll() is not None, 60)
        time.sleep(delay)  # somewhere in the migrations (they take two seconds or so)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert database.exists() != partial()  # cut short: only the file aside; else (a fast machine) the whole store
    tracker = Tracker(None, "next", prepare=False)  # the next run starts the creation over
    assert tracker.client.get_experiment(tracker.experiment_id).name == "next"
    assert database.exists() and not partial()


def test_a_store_made_meanwhile_by_another_program_is_kept(store, monkeypatch):
    """``mlflow server`` (say) creates the store while mlp-lab makes its tables aside: the other one stays."""
    import sqlite3

    from mlflow import MlflowClient

    from mlp_lab import tracking

    store.mkdir()
    made = MlflowClient.__init__

    def meanwhile(self, uri=None, *args, **kwargs):
        made(self, uri, *args, **kwargs)
        if ".creating-" in str(uri):  # while mlp-lab's tables are made aside
            with sqlite3.connect(store / "mlflow.db") as db:
                db.execute("CREATE TABLE theirs (x)")

    monkeypatch.setattr(MlflowClient, "__init__", meanwhile)
    tracking._create_sqlite_store(f"sqlite:///{store / 'mlflow.db'}")
    with sqlite3.connect(store / "mlflow.db") as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("theirs",)]
    assert [p.name for p in store.iterdir()] == ["mlflow.db"]  # nothing left beside it


def test_a_store_made_again_in_one_process_is_made_whole(tmp_path):
    """MLflow keeps the stores it opened by URI: a second creation at the same path must not reuse the first."""
    import shutil

    from mlp_lab import tracking

    for _ in range(2):
        (tmp_path / "mlruns").mkdir()
        tracking._create_sqlite_store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
        assert (tmp_path / "mlruns" / "mlflow.db").stat().st_size > 100_000
        shutil.rmtree(tmp_path / "mlruns")


def test_a_store_whose_tables_were_only_partly_made_says_what_to_do(run_cli, store):
    """Stores broken by an interrupted creation (an earlier mlp-lab's, or another tool's) exist: say what to do."""
    import sqlite3
    import subprocess
    import sys

    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    from tests.conftest import subprocess_env

    tracker = Tracker(None, "made", prepare=False)
    first = ScriptDirectory.from_config(_get_alembic_config(tracker.uri)).get_base()
    with sqlite3.connect(store / "mlflow.db") as db:  # as if cut short: a later table missing, the rest unrecorded
        db.execute("DROP TABLE assessments")
        db.execute("UPDATE alembic_version SET version_num = ?", (first,))
    hint = (
        f"(its tables were only partly made or upgraded: a new store can be moved away ({store / 'mlflow.db'}) and made"
        " again; one that holds runs, restored from a backup)"
    )
    broken = (store / "mlflow.db").read_bytes()  # each attempt to upgrade it gets further: each command gets this one
    result = run_cli("run", "--plugin", "scratch", "--tiny", "--steps", "3")  # opened by the tracking process
    assert result.exit_code != 0 and hint in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    (store / "mlflow.db").write_bytes(broken)
    compared = subprocess.run(  # in a new process: MLflow keeps the stores this one opened
        [sys.executable, "-m", "mlp_lab", "compare"], cwd=store.parent, env=subprocess_env(), capture_output=True, text=True
    )
    assert compared.returncode != 0 and compared.stderr.strip().endswith(hint) and compared.stderr.count("\n") == 1
