"""Bad input: one line, exit code 2, no traceback, and no run created."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import runs_in, subprocess_env

CASES = {
    "unknown plugin": (["--plugin", "nope"], "unknown plugin 'nope'; known: augment, autograd,"),
    "lr zero": (["--plugin", "scratch", "--lr", "0"], "lr must be > 0.0"),
    "lr negative": (["--plugin", "scratch", "--lr", "-1"], "lr must be > 0.0"),
    "hidden zero": (["--plugin", "scratch", "--hidden", "0"], "hidden must be >= 1"),
    "steps zero": (["--plugin", "scratch", "--steps", "0"], "steps must be >= 1"),
    "steps huge": (["--plugin", "scratch", "--steps", "99999999999999999999"], "steps must be <= 100000000"),
    "lr nan": (["--plugin", "scratch", "--lr", "nan"], "lr must be a finite number, got nan"),
    "lr inf": (["--plugin", "scratch", "--lr", "inf"], "lr must be a finite number"),
    "option nan": (["--plugin", "dropout", "-p", "dropout=nan"], "dropout must be a finite number, got 'nan'"),
    "option overflows": (["--plugin", "scratch", "-p", "init_std=1e400"], "init_std must be a finite number"),
    "batch size zero": (["--plugin", "scratch", "--batch-size", "0"], "batch_size must be >= 1"),
    "batch size too large": (["--plugin", "scratch", "--batch-size", "1001"], "larger than the training set (1000)"),
    "batch size too large for tiny": (
        ["--plugin", "scratch", "--tiny", "--batch-size", "501"],
        "larger than the training set (500)",
    ),
    "missing data folder": (["--plugin", "scratch", "--full", "--data-dir", "/no/such/folder"], "/no/such/folder"),
    "tiny and full": (["--plugin", "scratch", "--tiny", "--full"], "--tiny and --full exclude each other"),
    "data folder without full": (["--plugin", "scratch", "--data-dir", "."], "--data-dir is read with --full only"),
    "unknown option": (["--plugin", "scratch", "-p", "nope=1"], "unknown parameter 'nope'"),
    "bad option value": (["--plugin", "scratch", "-p", "decay_at=soon"], "decay_at must be int"),
    "malformed -p": (["--plugin", "scratch", "-p", "decay_at"], "-p expects NAME=VALUE"),
    "-p twice": (["--plugin", "scratch", "-p", "decay=0.5", "-p", "decay=0.1"], "-p decay is given twice ('0.5' and '0.1')"),
    "-p beside its flag": (["--plugin", "scratch", "-p", "steps=5", "--steps", "10"], "-p steps=5 and --steps 10 both set steps"),
    "-p beside its flag, dashed": (["--plugin", "scratch", "--batch-size", "10", "-p", "batch-size=2"], "use --batch-size alone"),
    "-p beside flags, first": (["--plugin", "scratch", "-p", "steps=1", "-p", "lr=1", "--lr", "2", "--steps", "2"], "-p steps=1"),
    "seeds not integers": (["--plugin", "scratch", "--seeds", "1,x"], "--seeds expects comma-separated integers"),
    "seeds with an empty item": (["--plugin", "scratch", "--seeds", "0,,1"], "--seeds expects comma-separated integers"),
    "seed and seeds": (["--plugin", "scratch", "--seed", "1", "--seeds", "1,2"], "only one of --seed, --seeds and --repeat"),
    "seed too large": (["--plugin", "scratch", "--seed", str(2**64)], f"seed {2**64} is out of range"),
    "negative seed": (["--plugin", "scratch", "--seeds", "1,-1"], "seed -1 is out of range"),
    "unreachable server": (["--plugin", "scratch", "--tracking-uri", "http://127.0.0.1:9"], "cannot reach the MLflow server"),
    "store folder missing": (
        ["--plugin", "scratch", "--tracking-uri", "sqlite:///no/such/folder/x.db"],
        "cannot open the MLflow store sqlite:///no/such/folder/x.db: its folder no/such/folder does not exist",
    ),
    "store of no scheme MLflow has": (
        ["--plugin", "scratch", "--tracking-uri", "bogus://x"],
        "cannot open the MLflow store bogus://x: MLflow stores have no scheme 'bogus' (it knows sqlite://, http://",
    ),
    "store in a folder that takes no files": (
        ["--plugin", "scratch", "--tracking-uri", "sqlite:////proc/x.db"],
        "cannot open the MLflow store sqlite:////proc/x.db: cannot write in /proc (",
    ),
    "empty experiment name": (["--plugin", "scratch", "--experiment", " "], "an MLflow experiment needs a name"),
    "no plugin": ([], "Missing option '--plugin'"),
    "unknown flag": (["--plugin", "scratch", "--bogus"], "No such option '--bogus'. (see 'mlp-lab run --help')"),
    "bad type": (["--plugin", "scratch", "--steps", "many"], "'many' is not a valid integer"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_line_exit_2_and_no_run(case, run_cli, store):
    args, message = CASES[case]
    result = run_cli("run", *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert runs_in(store) == []


def test_a_run_that_fails_before_training_leaves_no_empty_experiment(run_cli, store, tmp_path):
    """The store opens beside the data loading; the experiment is made only when the first run is."""
    from mlflow import MlflowClient

    from mlp_lab import mnist

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in mnist.FILES.values():
        (corrupt / name).write_bytes(b"not MNIST")
    result = run_cli("run", "--plugin", "scratch", "--full", "--data-dir", corrupt, "--experiment", "fresh")
    assert result.exit_code == 2 and "checksum" in result.stderr, result.output
    assert MlflowClient(f"sqlite:///{store / 'mlflow.db'}").get_experiment_by_name("fresh") is None
    made = run_cli("run", "--plugin", "scratch", "--tiny", "--steps", "2", "-q", "--experiment", "fresh")
    assert made.exit_code == 0 and [r.info.run_name for r in runs_in(store, "fresh")] == ["scratch-s1337"], made.output


def test_gradcheck_unknown_plugin(run_cli):
    result = run_cli("gradcheck", "--plugin", "nope")
    (line,) = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and line.startswith("Error: unknown plugin 'nope'; known: ")
    assert {"scratch", "autograd", "nn-module"} <= set(line.split("known: ")[1].split(", "))
    negative = run_cli("gradcheck", "--plugin", "scratch", "--seed", "-3")  # the seed range of run
    assert negative.exit_code == 2 and negative.stderr.strip() == (
        "Error: seed -3 is out of range: seeds are 0 to 9223372036854775807 (torch's seed range)"
    )


def test_gradcheck_takes_a_hyperparameter_once(run_cli):
    twice = run_cli("gradcheck", "--plugin", "scratch", "-p", "hidden=5", "--hidden", "6")
    assert twice.exit_code == 2
    assert twice.stderr.strip() == "Error: -p hidden=5 and --hidden 6 both set hidden; use --hidden alone"


def test_help_and_version_everywhere(run_cli):
    for args in (["--help"], ["run", "--help"], ["plugins", "--help"], ["gradcheck", "--help"]):
        result = run_cli(*args)
        assert result.exit_code == 0 and "Usage:" in result.stdout
    version = run_cli("--version")
    assert version.exit_code == 0 and version.stdout.startswith("mlp-lab, version ")


def test_bad_metrics_interval_is_one_line_exit_2_and_no_run(run_cli, store):
    result = run_cli("run", "--plugin", "scratch", env={"MLP_LAB_METRICS_INTERVAL": "soon"})
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: MLP_LAB_METRICS_INTERVAL must be a number of seconds, not 'soon'"
    assert runs_in(store) == []


def test_a_data_folder_from_the_environment_need_not_exist_yet(run_cli, store, tmp_path):
    """MLP_LAB_DATA_DIR names where the full files are kept (downloaded there when missing); small sets never read it."""
    result = run_cli(
        "run", "--plugin", "scratch", "--tiny", "--steps", "5", "-q", env={"MLP_LAB_DATA_DIR": str(tmp_path / "later")}
    )
    assert result.exit_code == 0, result.output
    assert len(runs_in(store)) == 1


def test_a_store_that_cannot_take_the_run_fails_before_training(store, tmp_path):
    """A deleted experiment: one line and exit 2 at once, not after a million steps of training."""
    from mlflow import MlflowClient

    from mlp_lab.tracking import Tracker

    Tracker(None, "gone").experiment_id  # noqa: B018 - made with its first run, or when asked for
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    client.delete_experiment(client.get_experiment_by_name("gone").experiment_id)
    command = [sys.executable, "-m", "mlp_lab", "run", "--plugin", "scratch", "--steps", "1000000", "--experiment", "gone"]
    result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    deleted = f"Error: experiment 'gone' is deleted in sqlite:///{store / 'mlflow.db'}: restore it (mlflow experiments restore -x"
    assert result.stderr.startswith(deleted) and result.stderr.rstrip().endswith("or use another experiment name")
    assert result.stderr.count("\n") == 1 and result.stdout == ""  # no progress: training never started
    compared = subprocess.run([*command[:3], "compare", "--experiment", "gone"], cwd=tmp_path, env=subprocess_env(),
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert compared.returncode == 2
    assert compared.stderr == result.stderr  # the same message from compare


def test_runs_started_at_once_in_a_new_folder_both_finish(tmp_path):
    """Two processes creating the same new store: they take turns instead of one failing after training."""
    command = [sys.executable, "-m", "mlp_lab", "run", "--plugin", "scratch", "--tiny", "--steps", "5", "-q"]
    procs = [
        subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0, 0], [err[-1500:] for _, err in results]
    assert sorted(r.info.status for r in runs_in(tmp_path / "mlruns")) == ["FINISHED", "FINISHED"]


def test_the_hint_names_the_store_that_is_not_the_default(run_cli, store, tmp_path):
    other = tmp_path / "elsewhere" / "x.db"
    other.parent.mkdir()
    result = run_cli("run", "--plugin", "scratch", "--tiny", "--steps", "3", "-q", "--tracking-uri", f"sqlite:///{other}")
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith(f"See them with: mlp-lab ui --tracking-uri sqlite:///{other}")


@pytest.mark.parametrize(
    ("in_the_way", "says"),
    [
        ("mlruns", "cannot make the MLflow store's folder mlruns: a file of that name is in the way"),
        ("mlruns/artifacts", "cannot write artifacts in"),
    ],
)
def test_a_file_in_the_stores_way_fails_before_training(run_cli, store, tmp_path, in_the_way, says):
    """The store's folder, or its artifacts folder, cannot be written: one line before any training, no run."""
    (tmp_path / in_the_way).parent.mkdir(exist_ok=True)
    (tmp_path / in_the_way).write_text("not a folder")
    for command in (["run", "--plugin", "scratch", "--tiny", "--steps", "3"], ["ui", "--port", "1"]):
        if command[0] == "ui" and in_the_way != "mlruns":
            continue  # the UI leaves artifacts to MLflow's server
        result = run_cli(*command)
        assert (result.exit_code, result.stdout) == (2, ""), result.output
        assert result.stderr.startswith("Error: ") and says in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "mlruns").is_dir() or runs_in(store) == []


def test_a_database_path_that_is_a_folder_is_one_line_at_once(run_cli, store, tmp_path):
    """MLflow would retry opening it for almost two minutes, with a warning each time."""
    folder = tmp_path / "runs.db"
    folder.mkdir()
    says = f"Error: cannot open the MLflow store sqlite:///{folder}: {folder} is a folder, not an SQLite database"
    for command in (("run", "--plugin", "scratch", "--tiny", "--steps", "3"), ("compare",)):
        result = run_cli(*command, "--tracking-uri", f"sqlite:///{folder}")
        assert (result.exit_code, result.stderr.strip()) == (2, says), result.output
    assert list(folder.iterdir()) == []


def test_a_read_only_database_is_one_line_with_its_reason(store, tmp_path):
    """Root writes past file modes; an immutable file (chattr +i) it cannot. MLflow logs a traceback of its own."""
    database = tmp_path / "kept.db"
    command = [sys.executable, "-m", "mlp_lab", "run", "--plugin", "scratch", "--tiny", "--steps", "2", "-q"]
    command += ["--tracking-uri", f"sqlite:///{database}"]
    made = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert made.returncode == 0, made.stderr[-2000:]
    if subprocess.run(["chattr", "+i", str(database)], capture_output=True).returncode != 0:
        database.chmod(0o444)
        if os.access(database, os.W_OK):
            pytest.skip("no way to make the database read-only here (root, without chattr)")
    try:
        result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    finally:
        subprocess.run(["chattr", "-i", str(database)], capture_output=True)
        database.chmod(0o644)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"Error: cannot create a run in the MLflow store sqlite:///{database}: ")
    assert "attempt to write a readonly database" in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_database_error_wrapped_by_sqlalchemy_says_the_databases_reason():
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from mlp_lab.errors import first_line

    cause = sqlite3.OperationalError("attempt to write a readonly database")
    wrapped = OperationalError("INSERT INTO runs ...", {}, cause)
    assert first_line(wrapped) == "attempt to write a readonly database"
    autoflush = "(raised as a result of Query-invoked autoflush; consider using a session.no_autoflush block)"
    as_text = RuntimeError(f"{autoflush}\n{wrapped}")  # as it comes back from the tracking process, unpickled
    assert first_line(as_text) == "(sqlite3.OperationalError) attempt to write a readonly database"


def test_ui_on_a_mistyped_store_is_an_error_not_a_new_store(run_cli, store, tmp_path):
    result = run_cli("ui", "--port", "1", "--tracking-uri", f"sqlite:///{tmp_path / 'nothere.db'}")
    assert (result.exit_code, result.stderr.strip()) == (2, f"Error: no MLflow store at sqlite:///{tmp_path / 'nothere.db'}")
    assert not (tmp_path / "nothere.db").exists()


def test_ui_reaches_the_server_start_for_the_default_store_however_it_is_named(store, tmp_path):
    from mlp_lab import ui

    default = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert default in ui.command(None, "127.0.0.1", 1)  # created if missing
    assert default in ui.command(default, "127.0.0.1", 1)  # the same store, named (MLFLOW_TRACKING_URI, say)
    assert f"{default}?timeout=30" in ui.command(f"{default}?timeout=30", "127.0.0.1", 1)  # with a query: the file exists


@pytest.mark.parametrize("variable", ["MLP_LAB_DATA_DIR", "XDG_CACHE_HOME"])
def test_a_data_folder_that_cannot_be_made_is_one_line(run_cli, store, tmp_path, variable, monkeypatch):
    monkeypatch.delenv("MLP_LAB_DATA_DIR", raising=False)
    (tmp_path / "afile").write_text("not a folder")
    result = run_cli("run", "--plugin", "scratch", "--full", "--steps", "2", env={variable: str(tmp_path / "afile")})
    assert result.exit_code == 2, result.output
    assert (
        result.stderr.startswith(f"Error: cannot make the data folder {tmp_path / 'afile'}")
        and "a file is in the way" in result.stderr
    )
    assert runs_in(store) == []


def test_mlflows_logged_database_errors_are_dropped_and_its_retry_warnings_kept():
    """The error is raised and said in one line anyway; a database still being retried must not go silent."""
    import logging

    from mlp_lab.tracking import quiet_mlflow_logs

    quiet_mlflow_logs()
    quiet_mlflow_logs()  # twice: one filter
    db = logging.getLogger("mlflow.store.db.utils")

    def record(level: int) -> logging.LogRecord:
        return db.makeRecord(db.name, level, __file__, 1, "message", (), None)

    assert db.isEnabledFor(logging.WARNING) and db.filter(record(logging.WARNING))
    assert not db.filter(record(logging.ERROR)) and len(db.filters) == 1
