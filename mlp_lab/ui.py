"""``mlp-lab ui``: the MLflow UI (``mlflow server``) on the project's store, until Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from typing import Any

from mlp_lab.errors import UsageError
from mlp_lab.tracking import default_artifact_root, resolve_uri


def command(uri: str | None, host: str, port: int, workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line for the store ``uri`` (default ./mlruns, created if missing)."""
    backend = resolve_uri(uri)
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
    proc = subprocess.Popen(cmd)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print("MLflow UI stopped.", file=out)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
