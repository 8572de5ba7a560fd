"""Shared fixtures: a real MLflow store in a temporary folder, the CLI, real plugin distributions."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlp_lab.cli import cli
from mlp_lab.registry import get_registry

REPO = Path(__file__).resolve().parent.parent
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test discovers plugins anew, with no plugin selection or tracing left over."""
    monkeypatch.delenv("MLP_LAB_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("MLP_LAB_TRACE_PLUGINS", raising=False)
    monkeypatch.delenv("MLP_LAB_METRICS_INTERVAL", raising=False)  # the default, unless a test sets one
    monkeypatch.setenv("no_proxy", ",".join(filter(None, [os.environ.get("no_proxy"), "127.0.0.1", "localhost"])))
    get_registry.cache_clear()
    yield
    get_registry.cache_clear()


MLFLOW_SETTINGS = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
# Read when pytest loads this file, before any test or fixture can have run MLflow.
BASELINE = {key: os.environ.get(key) for key in MLFLOW_SETTINGS}


@pytest.fixture(scope="session")
def mlflow_baseline():
    """MLflow's settings as the test session found them."""
    return dict(BASELINE)


@pytest.fixture(autouse=True)
def mlflow_settings_kept(mlflow_baseline):
    """MLflow keeps the tracking URI and experiment in process-wide globals and environment variables
    (``set_tracking_uri`` sets MLFLOW_TRACKING_URI): every test starts and ends with the session's, so no
    test's store, nor a module fixture's, becomes another test's default."""

    def restore() -> None:
        if "mlflow" in sys.modules:
            import mlflow

            mlflow.set_tracking_uri(mlflow_baseline["MLFLOW_TRACKING_URI"])
        for key, value in mlflow_baseline.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    restore()
    yield
    restore()


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Work in a temporary folder whose ./mlruns is the (real, SQLite) MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "mlruns"


@pytest.fixture
def run_cli(store):
    """Invoke ``mlp-lab`` in this process; returns click's Result (exit_code, stdout, stderr)."""

    def invoke(*args: str, env: dict | None = None):
        return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False, prog_name="mlp-lab")

    return invoke


def runs_in(store: Path, experiment: str = "mlp-lab") -> list:
    """Every run of ``experiment`` in the store (none when the store does not exist)."""
    if not (store / "mlflow.db").exists():
        return []
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=50000)


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """Make a real installed distribution: a module and a dist-info with ``mlp_lab`` entry points.

    ``plugin_dist(dist, module, code, entry_points={"name": "module"}, group="mlp_lab")`` writes both into a folder
    put on ``sys.path`` (and returned, for subprocesses' PYTHONPATH); importlib.metadata then
    finds the distribution and its entry points exactly as it finds pip-installed ones.
    """
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(site))

    def make(
        dist: str,
        module: str,
        code: str,
        entry_points: dict[str, str] | None = None,
        version: str = "0.1",
        group: str = "mlp_lab",
    ) -> Path:
        (site / f"{module}.py").write_text(textwrap.dedent(code))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        eps = entry_points or {module: module}
        (info / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
        sys.modules.pop(module, None)
        get_registry.cache_clear()
        return site

    return make


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(extra)
    return env
