"""A tracking server URL works like the local store: runs, metrics, artifacts and the model."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from .conftest import subprocess_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        env=subprocess_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),  # no job-runner processes to outlive it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the server and every worker it started
        proc.wait()


def test_run_against_a_tracking_server(server, run_cli, tmp_path):
    result = run_cli(
        "run", "--plugin", "scratch", "--steps", "60", "--tiny", "--tracking-uri", server, "--experiment", "remote", "-q"
    )
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "mlruns").exists()  # nothing went to the local default store
    assert f"See them with: {server}" in result.stdout  # the server's own UI, not the default store's
    client = MlflowClient(server)
    (run,) = client.search_runs([client.get_experiment_by_name("remote").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["plugin"] == "scratch"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 60
    assert "loss_curve.png" in [a.path for a in client.list_artifacts(run.info.run_id)]
    mlflow.set_tracking_uri(server)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert model.predict(np.zeros((2, 784), dtype="float32")).shape == (2,)
