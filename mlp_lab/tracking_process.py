"""``mlp-lab run``'s MLflow work, in a process of its own beside the training.

Importing MLflow and opening its store take about 3 s of CPU, and all of it is Python: in the
training process it could only run before training (training keeps both cores busy) and only
one thread at a time. So ``mlp-lab run`` starts this process first thing. It imports MLflow,
opens the store and creates the runs on a core of its own while the training process imports
torch and loads the data; then it writes what the training process hands it (metrics in
batches, datasets, the figure, the model file) and ends the runs. It never imports torch.

:class:`RemoteTracker` and :class:`RemoteRun` are :class:`~mlp_lab.tracking.Tracker` and
:class:`~mlp_lab.tracking.RunLog` as the training process sees them; the real ones live in the
tracking process. Calls that return nothing useful (metrics, datasets) do not wait; the rest
wait for their answer, and an error there is raised here.

Ctrl-C and SIGTERM are the training process's to handle (it ends the run KILLED through this
process), so this process ignores them. If the training process dies without closing it
(``kill -9``, a crash), this process writes what it was sent, ends the open runs KILLED and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import itertools
import multiprocessing.connection
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlp_lab
from mlp_lab.errors import TrackingError, first_line
from mlp_lab.tracking import StoreError, check_store, prepare_for_runs, resolve_uri, store_error

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlp_lab.tracking import RunLog, Tracker

SERVICE = 0  # the target of calls to the tracking process itself; runs are numbered from 1
ABANDONED = "mlp-lab stopped before the run ended"


class TrackingProcessError(TrackingError):
    """The tracking process stopped, or could not be started."""


class RemoteTraceback(Exception):
    """The traceback of an error raised in the tracking process (shown as the cause of the error raised here)."""

    def __str__(self) -> str:
        return self.args[0]


class TrackingProcess:
    """The tracking process and the two threads that talk to it (signals never interrupt their reads and writes)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        root = str(Path(mlp_lab.__file__).resolve().parent.parent)  # where this mlp-lab is imported from, if not installed
        code = (  # not the working folder's modules
            f"import sys; del sys.path[0]; sys.path.append({root!r}); from mlp_lab.tracking_process import main; main()"
        )
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=2,  # MLflow's chatter: never into what this process prints
                start_new_session=True,  # no Ctrl-C from the terminal: the training process ends the runs
            )
        self._conn = multiprocessing.connection.Connection(ours.detach())
        self._outbox: queue.Queue = queue.Queue()
        self._replies: dict[int, tuple[bool, Any]] = {}
        self._write_errors: dict[int, Any] = {}  # run -> the error its queued records failed with (sent unasked)
        self._answered = threading.Condition()
        self._ids = itertools.count(1)
        self._stopped: str | None = None  # why the process cannot be reached any more
        self._used = False  # whether it was asked to open a store (else closing may simply kill it)
        self._closed = False
        threading.Thread(target=self._send, name="mlp-lab-tracking-send", daemon=True).start()
        threading.Thread(target=self._receive, name="mlp-lab-tracking-receive", daemon=True).start()
        atexit.register(self.close)  # however this process ends, short of being killed

    def call(self, target: int, method: str, *args: Any, wait: bool = True, **kwargs: Any) -> Any:
        """Call ``method`` of ``target`` in the tracking process; with ``wait``, return its result or raise its error."""
        self.check()
        call_id = next(self._ids) if wait else 0
        payload = pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)  # what cannot be sent fails here
        message = pickle.dumps((call_id, target, method, payload), protocol=pickle.HIGHEST_PROTOCOL)
        self._used = True
        self._outbox.put(message)
        if not wait:
            return None
        with self._answered:
            while call_id not in self._replies and self._stopped is None:
                self._answered.wait()
            if call_id not in self._replies:
                raise TrackingProcessError(self._stopped or "the tracking process stopped")
            ok, value = self._replies.pop(call_id)
        if ok:
            return value
        raise _rebuild(value)

    def raise_write_error(self, target: int) -> None:
        """Raise, once, the error with which the tracking process failed to write run ``target``'s queued records."""
        value = self._write_errors.pop(target, None)
        if value is not None:
            raise _rebuild(value)

    def check(self) -> None:
        """:class:`TrackingProcessError` if the tracking process can no longer be reached."""
        if self._stopped is not None:
            raise TrackingProcessError(self._stopped)

    def close(self) -> None:
        """End the tracking process: once it has written everything, or at once if it was never used."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._used and self._stopped is None:
                self.call(SERVICE, "close")
        except (TrackingProcessError, KeyboardInterrupt):
            pass
        finally:
            self._outbox.put(None)
            try:
                self._process.wait(timeout=60 if self._used and self._stopped is None else 0)
            except subprocess.TimeoutExpired:
                self._process.kill()  # it ignores SIGTERM
                self._process.wait()
            self._conn.close()
            atexit.unregister(self.close)

    def _send(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self._conn.send_bytes(message)
            except (OSError, ValueError) as exc:
                self._stop(self._why_gone(f"cannot be reached: {first_line(exc)}"))
                return

    def _receive(self) -> None:
        try:
            while True:
                call_id, ok, value = self._conn.recv()
                if call_id < 0:  # run -call_id could not be written: raised by its next call (see raise_write_error)
                    self._write_errors[-call_id] = value
                else:
                    self._answer(call_id, ok, value)
        except BaseException as exc:  # noqa: BLE001 - EOF when it exits; whatever else, nothing more can be read
            self._stop(self._why_gone(None if isinstance(exc, (EOFError, OSError)) else f"cannot be read: {first_line(exc)}"))

    def _why_gone(self, otherwise: str | None) -> str:
        """Why the process can no longer be reached: that it stopped, with its exit code, if it did within a few
        seconds; else ``otherwise``. Both threads may find out at once (a broken pipe, an end of file): they agree."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=5)
        code = self._process.returncode
        if code is None and otherwise:
            return f"the tracking process {otherwise}"
        return "the tracking process stopped" + (f" (exit code {code})" if code else "")

    def _answer(self, call_id: int, ok: bool, value: Any) -> None:
        with self._answered:
            self._replies[call_id] = (ok, value)
            self._answered.notify_all()

    def _stop(self, why: str) -> None:
        with self._answered:
            if self._stopped is None:
                self._stopped = why
            self._answered.notify_all()


class RemoteTracker:
    """An MLflow experiment in a store, opened and written by the tracking process (see :class:`~mlp_lab.tracking.Tracker`)."""

    def __init__(self, process: TrackingProcess, uri: str | None, experiment: str) -> None:
        self.uri = resolve_uri(uri)
        check_store(self.uri)
        self.experiment = experiment
        self._process = process
        self._experiment_id: str | None = None
        self._client: MlflowClient | None = None
        process.call(SERVICE, "open", self.uri, experiment, wait=False)

    def wait(self) -> RemoteTracker:
        """Block until the store is open; :class:`StoreError` when it cannot be."""
        if self._experiment_id is None:
            self._experiment_id = self._process.call(SERVICE, "wait")
        return self

    @property
    def experiment_id(self) -> str:
        self.wait()
        assert self._experiment_id is not None
        return self._experiment_id

    @property
    def client(self) -> MlflowClient:
        """An MLflow client on the store, in this process (to read the runs back once they are written)."""
        if self._client is None:
            from mlflow import MlflowClient

            from mlp_lab.tracking import quiet_mlflow_logs

            quiet_mlflow_logs()
            self._client = MlflowClient(self.wait().uri)
        return self._client

    def report_group(self, parent_id: str, width: int) -> str:
        """The group's comparison, made and logged by the tracking process (MLflow is imported there already)."""
        return self._process.call(SERVICE, "report_group", parent_id, width)

    def start_run(
        self, name: str, params: dict[str, Any], tags: dict[str, str] | None = None, parent: str | None = None
    ) -> RemoteRun:
        """A new run with ``params`` logged (a child of ``parent`` when given); created in the tracking process."""
        handle = self._process.call(SERVICE, "start_run", name, _texts(params), _texts(tags or {}), parent)
        return RemoteRun(self._process, handle, self.uri)


class RemoteRun:
    """One run, written by the tracking process (see :class:`~mlp_lab.tracking.RunLog` for each method)."""

    def __init__(self, process: TrackingProcess, handle: int, uri: str) -> None:
        self._process = process
        self._handle = handle
        self._uri = uri
        self._run_id: str | None = None

    def _call(self, method: str, *args: Any, wait: bool = True, **kwargs: Any) -> Any:
        result = self._process.call(self._handle, method, *args, wait=wait, **kwargs)
        if not wait:  # a call that queues records (sent first: they may still be written), so training stops
            self._process.raise_write_error(self._handle)
        return result

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            self._run_id = self._call("ready")
        return self._run_id

    def ready(self) -> RemoteRun:
        self.run_id  # noqa: B018 - waits, or raises why the run does not exist
        return self

    def log_series(self, key: str, values: Iterable[float], first_step: int) -> None:
        self._call("log_series", key, [float(v) for v in values], first_step, wait=False)

    def log_metrics(self, metrics: dict[str, float], step: int, now: bool = False) -> None:
        self._call("log_metrics", {k: float(v) for k, v in metrics.items()}, step, now=now, wait=now)

    def log_dataset(self, name: str, digest: str, source: str, features: Any, targets: Any, context: str) -> None:
        self._call("log_dataset", name, digest, source, features, targets, context, wait=False)

    def push(self) -> None:
        self._call("push", wait=False)

    def log_figure(self, figure: Any, path: str) -> None:
        """Log a matplotlib figure, or the figure a callable returns: drawn here, while the tracking process writes."""
        drawn = figure() if callable(figure) else figure
        image = io.BytesIO()
        drawn.savefig(image, format=Path(path).suffix.lstrip(".") or "png")
        self._call("log_file", image.getvalue(), path)

    def log_text(self, text: str, path: str) -> None:
        self._call("log_text", text, path)

    def log_model(self, model_file: bytes, input_example: Any, pip_requirements: list[str], step: int) -> str:
        return self._call("log_model", model_file, input_example, pip_requirements, step)

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        if status == "FINISHED":  # a run whose records could not all be written does not finish
            self._process.raise_write_error(self._handle)
        try:
            self._call("end", status, error)
        except TrackingProcessError as exc:  # it is gone: end the run from here, not leave it RUNNING
            gone = str(exc)
            self._end_here(f"{error}; {gone}" if error and gone not in error else error or gone)
            raise
        self._process.raise_write_error(self._handle)  # a write that failed while it ended (its answer came first)

    def _end_here(self, error: str) -> None:
        if self._run_id is None:
            return
        with contextlib.suppress(Exception):
            from mlflow import MlflowClient

            client = MlflowClient(self._uri)
            client.set_tag(self._run_id, "mlp_lab.error", error[:5000])
            client.set_terminated(self._run_id, "FAILED")


def _texts(values: dict[str, Any]) -> dict[str, str]:
    """Values as MLflow stores them, text (and plain: ``torch.__version__`` would import torch there)."""
    return {k: str(v) for k, v in values.items()}


# -- in the tracking process ------------------------------------------------------------------------

RUN_METHODS = frozenset(["ready", "log_series", "log_metrics", "log_dataset", "push", "log_file", "log_text", "log_model", "end"])


class Service:
    """What the tracking process holds: the tracker and the runs, by number."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self.send = send  # to the training process, unasked: a run's failed write
        self.tracker: Tracker | None = None
        self.open_error: StoreError | None = None
        self.runs: dict[int, RunLog] = {}
        self.ended: set[int] = set()
        self.errors: dict[int, BaseException] = {}  # raised by calls nobody waited for; reported by the next call that waits

    def open(self, uri: str, experiment: str) -> None:
        """Open the store now; an error is kept for :meth:`wait` (nobody waits for this call)."""
        from mlp_lab.tracking import Tracker

        try:
            self.tracker = Tracker(uri, experiment, prepare=False)
        except StoreError as exc:  # already says which store, and why
            self.open_error = exc
        except Exception as exc:  # noqa: BLE001 - whatever MLflow raised, reported by wait
            self.open_error = store_error(uri, exc)

    def wait(self) -> str:
        return self.opened().experiment_id

    def opened(self) -> Tracker:
        if self.tracker is None:
            raise self.open_error or StoreError("no MLflow store was opened")
        return self.tracker

    def start_run(self, name: str, params: dict[str, Any], tags: dict[str, str] | None, parent: str | None) -> int:
        handle = len(self.runs) + 1
        run = self.runs[handle] = self.opened().start_run(name, params, tags=tags, parent=parent)
        run.on_write_error = lambda error: self.send((-handle, False, _portable(error)))
        return handle

    def report_group(self, parent_id: str, width: int) -> str:
        """The group's comparison table (``width`` columns), logged on its parent run here."""
        return self.opened().report_group(parent_id, width)

    def imported(self, module: str) -> bool:
        """Whether this process has imported ``module`` (it never should torch)."""
        return module in sys.modules

    def dispatch(self, target: int, method: str, payload: bytes) -> Any:
        args, kwargs = pickle.loads(payload)  # a class this process cannot import fails here, as the call's error
        if target == SERVICE:
            if method not in ("open", "wait", "start_run", "report_group", "imported", "close"):
                raise AttributeError(f"no such call: {method}")
            if method == "close":
                self.abandon()  # normally none is open by now
                return None
            return getattr(self, method)(*args, **kwargs)
        if method not in RUN_METHODS:
            raise AttributeError(f"no such call on a run: {method}")
        if target in self.errors:
            raise self.errors.pop(target)
        run = self.runs[target]
        if method == "ready":
            return run.ready().run_id
        try:
            return getattr(run, method)(*args, **kwargs)
        finally:
            if method == "end":  # ended, even if writing what was left failed
                self.ended.add(target)

    def abandon(self) -> None:
        """End every open run KILLED, with what it was sent (the training process is gone, or closed without ending it)."""
        for handle, run in reversed(self.runs.items()):  # children before their group
            if handle not in self.ended:
                self.ended.add(handle)
                with contextlib.suppress(Exception):
                    run.end("KILLED", ABANDONED)


def main() -> None:
    """The tracking process's entry point: the connection's file descriptor is its one argument."""
    serve(multiprocessing.connection.Connection(int(sys.argv[1])))


def serve(conn: Any) -> None:
    """The tracking process: import MLflow, then answer the training process's calls until it closes or goes.

    Until the store is opened it imports what opening it needs; once it is open, while the
    training process may still load its data, what logging a model needs (MLflow's pyfunc
    flavour, its map of installed packages, GitPython). Runs' figures are drawn by the training process; a
    group's comparison, figure included, is made here once its runs are written.
    If anything ends this loop but a close, the open runs end KILLED with what they were sent.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sending = threading.Lock()  # answers go from this thread, failed writes from the runs' threads

    def send(message: Any) -> None:
        with sending:
            conn.send(message)

    service = Service(send)
    try:
        _warm_up()
        while True:
            try:
                call_id, target, method, payload = conn.recv()
            except (EOFError, OSError):
                return
            try:
                ok, value = True, service.dispatch(target, method, payload)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                ok, value = False, _portable(exc)
                if not call_id:
                    service.errors.setdefault(target, exc)
            if call_id:
                try:
                    send((call_id, ok, value))
                except (OSError, ValueError):  # the training process is gone
                    return
            if target == SERVICE and method == "close":
                conn.close()
                _exit()
            if method == "open":
                with contextlib.suppress(Exception):
                    prepare_for_runs(figures=False)
    finally:
        service.abandon()


def _warm_up() -> None:
    """Import what opening the store needs, before the first call comes (the training process is busy with torch)."""
    import mlflow  # noqa: F401

    with contextlib.suppress(ImportError):  # a SQLite or database store's tables (most of opening one)
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def _exit() -> None:
    """Exit now that everything is written: run the exit handlers, skip tearing down MLflow's modules (most of a second)."""
    import atexit as exit_handlers

    exit_handlers._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _portable(exc: BaseException) -> tuple[bytes | None, str, str, str]:
    """An error as it can travel: pickled if it can be, with its type's name, message and traceback."""
    try:
        data: bytes | None = pickle.dumps(exc)
        pickle.loads(data)
    except Exception:  # noqa: BLE001 - some exceptions do not survive pickling
        data = None
    return data, type(exc).__name__, str(exc), "".join(traceback.format_exception(exc))


def _rebuild(value: tuple[bytes | None, str, str, str]) -> BaseException:
    data, name, message, remote_traceback = value
    exc: BaseException | None = None
    if data is not None:
        with contextlib.suppress(Exception):
            exc = pickle.loads(data)
    if exc is None:
        exc = TrackingProcessError(f"{name}: {message}")
    if remote_traceback:
        exc.__cause__ = RemoteTraceback(f'\n"""\nIn the tracking process:\n{remote_traceback}"""')
    return exc


@contextlib.contextmanager
def started() -> Iterator[TrackingProcess | None]:
    """The tracking process for one command (None where none can start: see :func:`start`), closed when the block ends."""
    process = start()
    try:
        yield process
    finally:
        if process is not None:
            process.close()


def start() -> TrackingProcess | None:
    """Start the tracking process; None where it cannot be (Windows: no descriptors to pass), and MLflow runs in this one."""
    if os.name == "nt":
        return None
    try:
        return TrackingProcess()
    except (OSError, ValueError) as exc:
        raise TrackingProcessError(f"cannot start the tracking process: {exc}") from None
