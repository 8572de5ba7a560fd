"""``mlp-lab ui``: the MLflow UI (``mlflow server``) on the project's store, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any

from mlp_lab.errors import UsageError
from mlp_lab.tracking import DEFAULT_DIR, default_artifact_root, resolve_uri, sqlite_path

QUIET_WARNINGS = "ignore:starlette.middleware.wsgi is deprecated:UserWarning"


def command(uri: str | None, host: str, port: int, workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line for the store ``uri`` (default ./mlruns, created if missing; another
    SQLite store must exist)."""
    backend = resolve_uri(uri)
    database = sqlite_path(backend)
    if database is not None and not database.is_file() and database.resolve() != (DEFAULT_DIR / "mlflow.db").resolve():
        raise UsageError(f"no MLflow store at {backend}")  # a mistyped path, not a new empty store
    if backend.startswith(("http://", "https://", "databricks")):
        raise UsageError(f"{backend} is a tracking server already: open it in a browser")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--host", host, "--port", str(port)]
    cmd += ["--workers", str(workers)]
    root = default_artifact_root(backend)
    if root is not None:  # experiments created in the UI keep their artifacts beside the store, like ours
        cmd += ["--default-artifact-root", root]
    return cmd


def check_port(host: str, port: int) -> None:
    """A usage error, before MLflow starts, when ``host:port`` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: only a listener counts
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port or --host)") from None


def url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(uri: str | None, host: str, port: int, out: Any = None) -> int:
    """Run the MLflow UI in the foreground; Ctrl-C (or SIGTERM) stops it. Returns its exit code."""
    out = out or sys.stdout
    cmd = command(uri, host, port)
    check_port(host, port)
    print(f"MLflow UI for {cmd[cmd.index('--backend-store-uri') + 1]}", file=out)
    print(f"  {url(host, port)}   (Ctrl-C to stop)", file=out, flush=True)
    # MLflow's background job runners serve GenAI features mlp-lab does not use; without them the
    # server is one process, and its own session lets every process it starts be stopped together.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}
    # MLflow's server imports a Starlette module that warns of its own deprecation: MLflow's to mend, not the user's
    env["PYTHONWARNINGS"] = ",".join(w for w in (os.environ.get("PYTHONWARNINGS"), QUIET_WARNINGS) if w)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _stop(proc)
        print("MLflow UI stopped.", file=out)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server politely (SIGINT, which it passes on), then anything left in its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
