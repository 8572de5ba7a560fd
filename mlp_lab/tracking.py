"""MLflow tracking: where runs go, and everything a run logs (reading runs back is compare's and predict's).

Default store: ``sqlite:///mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts`` (created on
first use). ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` override it; a tracking server URL works
the same. Per-step metrics go through a background writer in batches, so a training step never
waits for the store.

Writing a metric costs MLflow about 0.1 ms of CPU, as much as a step of the seed's network on two
cores: written as they come, 10,000 losses slow such a run by a tenth. So metrics gather in
memory and are written every ``MLP_LAB_METRICS_INTERVAL`` seconds (default 30; TensorBoard's
writer waits 120), and all at once when training ends, beside the model and figure logging; a
failed or interrupted run writes what it has before it closes.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlp_lab.errors import TrackingError, UsageError, first_line

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_DIR = Path("mlruns")
BATCH = 1000  # MLflow accepts at most 1000 metrics in one log_batch call
INTERVAL = 30.0  # default seconds queued metrics wait before they are written (MLP_LAB_METRICS_INTERVAL)
HOLD = 100_000  # metrics held at most before they are written anyway
LONGEST = 86_400.0  # the longest wait between metric writes


def metrics_interval() -> float:
    """Seconds between metric writes during training: ``MLP_LAB_METRICS_INTERVAL``, else 30; ``inf`` (or any
    wait longer than a day): only when training ends, or :data:`HOLD` metrics are held."""
    value = os.environ.get("MLP_LAB_METRICS_INTERVAL", "")
    try:
        seconds = float(value) if value.strip() else INTERVAL
    except ValueError:
        seconds = math.nan
    if math.isnan(seconds):
        raise UsageError(f"MLP_LAB_METRICS_INTERVAL must be a number of seconds, not {value!r}")
    return min(max(0.0, seconds), LONGEST)  # a wait longer than this overflows the clock of queue.get


def resolve_uri(uri: str | None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else the project store in ./mlruns (created now)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    try:
        DEFAULT_DIR.mkdir(exist_ok=True)
    except FileExistsError:
        raise StoreError(f"cannot make the MLflow store's folder {DEFAULT_DIR}: a file of that name is in the way") from None
    except OSError as exc:
        raise StoreError(f"cannot make the MLflow store's folder {DEFAULT_DIR}: {exc.strerror or exc}") from None
    return f"sqlite:///{(DEFAULT_DIR / 'mlflow.db').resolve()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite store's URI (its query, ``?timeout=30`` say, left out); None for any other."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")  # MLflow's tracking stores


def store_schemes() -> set[str]:
    """The URI schemes MLflow has tracking stores for: its own, and those installed plugins add."""
    from importlib import metadata

    added = {ep.name for ep in metadata.entry_points(group="mlflow.tracking_store")}
    return {*SCHEMES, "uc", "databricks-uc", *added}


def check_store(uri: str) -> None:
    """:class:`StoreError` at once for a store that cannot work: a local database whose folder is missing, a server
    that does not answer (:func:`check_reachable`)."""
    scheme = uri.partition("://")[0].partition("+")[0].lower() if "://" in uri else ""
    if scheme and scheme not in store_schemes():  # MLflow's own message speaks of its model registry
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise StoreError(f"cannot open the MLflow store {uri}: MLflow stores have no scheme '{scheme}' (it knows {known})")
    database = sqlite_path(uri)
    if database is not None:
        folder = database.parent
        if not folder.is_dir():
            why = "is not a folder" if folder.exists() else "does not exist"
            raise StoreError(f"cannot open the MLflow store {uri}: its folder {folder} {why}")
        if database.exists() and not database.is_file():  # MLflow would retry opening it for minutes
            what = "a folder" if database.is_dir() else "not a file"
            raise StoreError(f"cannot open the MLflow store {uri}: {database} is {what}, not an SQLite database")
    check_reachable(uri)


def default_artifact_root(uri: str) -> str | None:
    """Artifacts beside a local SQLite store (``<store folder>/artifacts``); the server decides otherwise."""
    database = sqlite_path(uri)
    if database is not None:
        return (database.parent / "artifacts").resolve().as_uri()
    return None


@dataclass(frozen=True)
class ArrayShape:
    """What MLflow records of a dataset's array, its shape and dtype, without the values (cheap to send)."""

    shape: tuple[int, ...]
    dtype: str  # a numpy dtype name

    def stand_in(self) -> Any:
        """A read-only array of this shape and dtype, all zeros, taking no memory."""
        import numpy as np

        return np.broadcast_to(np.zeros((), dtype=self.dtype), self.shape)


def check_artifact_location(location: str) -> None:
    """A local artifact folder must take files: an ``OSError`` now, not when a run's figure and model are logged.

    A folder that exists gets a file written and removed; one that does not yet needs its nearest existing
    parent to be a writable folder (nothing is created). Remote locations (``mlflow-artifacts:``, ``s3:``, ...)
    are the server's to check.
    """
    import tempfile
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlparse(location)
    if parsed.scheme == "file":
        folder = Path(urllib.request.url2pathname(parsed.path))
    elif len(parsed.scheme) <= 1:  # a plain path (a Windows drive letter reads as a one-letter scheme)
        folder = Path(location)
    else:
        return
    try:
        if folder.is_dir():
            with tempfile.TemporaryFile(dir=folder, prefix=".mlp-lab-check-"):
                pass
            return
        parent = next(p for p in folder.absolute().parents if p.exists())
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(f"{parent} cannot be written")
    except OSError as exc:
        raise OSError(f"cannot write artifacts in {folder}: {exc.strerror or exc}") from exc


class StoreError(UsageError):
    """The MLflow store cannot be opened (bad URI, unreachable server, unwritable folder)."""


def store_refusal(exc: BaseException) -> str:
    """Why the store refused a run's write, in one line; for a run deleted while it ran, said so."""
    why = first_line(exc)
    if "must be in the 'active' state" in why:  # MLflow's words for a deleted run
        why += " (it, or its experiment, was deleted in the store meanwhile; restore it to see what it logged)"
    return why


def store_error(uri: str, exc: BaseException) -> StoreError:
    """The one-line error for a store MLflow could not open; for a local store whose tables were only partly
    made (its creation cut short, by an earlier mlp-lab or by anything else), what to do about it."""
    reason = first_line(exc)
    database = sqlite_path(uri)
    if database is not None and re.search(r"table \S+ already exists|duplicate column name", reason):
        reason += (
            f" (its tables were only partly made or upgraded: a new store can be moved away ({database}) and made"
            " again; one that holds runs, restored from a backup)"
        )
    return StoreError(f"cannot open the MLflow store {uri}: {reason}")


def deleted_experiment(experiment: Any, uri: str) -> StoreError:
    """The error for an experiment deleted in the store (MLflow keeps it, and its name, until it is purged)."""
    return StoreError(
        f"experiment '{experiment.name}' is deleted in {uri}: restore it (mlflow experiments restore"
        f" -x {experiment.experiment_id}, with MLFLOW_TRACKING_URI set to it) or use another experiment name"
    )


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """For a tracking server (http, https): :class:`StoreError` at once when nothing answers there.

    MLflow retries a refused connection with growing pauses, about four minutes in all; any HTTP
    answer to ``/health``, an error status included, means a server is there.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot reach the MLflow server at {uri}: {getattr(exc, 'reason', exc)}") from None


class Tracker:
    """An MLflow experiment in a store: creates runs and logs to them.

    Opening the store imports MLflow, creates the tables and finds the experiment (a new one is
    created when the first run needs it: see :attr:`experiment_id`); unless ``prepare`` is false,
    it also imports what runs need later (:func:`prepare_for_runs`), so that all of it is imported
    by one thread. With ``background=True`` this happens in a thread, beside the caller's
    own preparation (``mlp-lab run`` loads its data meanwhile, then waits for the store before
    training: beside training, the opening cost training 1.5 times the CPU it took). Whatever needs
    the store waits for it (:meth:`wait`), and a store that cannot be opened raises
    :class:`StoreError` there. Otherwise it happens now, raising the same error. Local SQLite
    stores are opened under a lock (``<database>.lock``), so that runs started at once do not both
    create the tables or the experiment.

    Python's imports are not safe against two threads importing the same packages at once: until
    :meth:`wait` returns, no other thread may import MLflow or matplotlib.
    """

    def __init__(self, uri: str | None, experiment: str, background: bool = False, prepare: bool = True) -> None:
        self.uri = resolve_uri(uri)
        self._prepare = prepare
        check_store(self.uri)
        self.experiment = experiment
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._experiment_id: str | None = None  # None until the experiment exists (see experiment_id)
        self._creating = threading.Lock()
        if background:
            threading.Thread(target=self._open, name="mlflow-open", daemon=True).start()
        else:
            self._open()
            self.wait()  # a StoreError naming the store, as in the background

    def _open(self) -> None:
        try:
            import mlflow
            from mlflow import MlflowClient

            quiet_mlflow_logs()
            mlflow.set_tracking_uri(self.uri)
            with _store_lock(self.uri):  # two mlp-lab processes must not both create the tables
                _create_sqlite_store(self.uri)
                client = MlflowClient(self.uri)
                found = client.get_experiment_by_name(self.experiment)
            self._client = client
            if found is not None and found.lifecycle_stage == "deleted":
                raise deleted_experiment(found, self.uri)
            if found is not None:
                self._use(found)
            elif (artifacts := _experiment_artifacts(self.uri, self.experiment)) is not None:
                check_artifact_location(artifacts)  # where the experiment will keep them, once created
            if self._prepare:
                prepare_for_runs()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the store
            self._error = exc
        finally:
            self._ready.set()

    def wait(self) -> Tracker:
        """Block until the store is open; :class:`StoreError` when it cannot be."""
        self._ready.wait()
        error = self._error
        if error is None:
            return self
        if isinstance(error, StoreError) or not isinstance(error, Exception):
            raise error  # it already says which store; or Ctrl-C (SIGTERM) while the store opened
        raise store_error(self.uri, error)

    @property
    def failed(self) -> bool:
        """Whether opening the store has already failed (never waits)."""
        return self._ready.is_set() and self._error is not None

    @property
    def client(self) -> MlflowClient:
        return self.wait()._client

    @property
    def experiment_id(self) -> str:
        """The experiment's id. An experiment that does not exist yet is created now, when the first run needs
        it: a command that fails before any run (bad data, Ctrl-C) leaves no empty experiment behind."""
        self.wait()
        with self._creating:
            if self._experiment_id is None:
                try:
                    self._create_experiment()
                except StoreError:
                    raise
                except Exception as exc:  # noqa: BLE001 - whatever the store raised
                    raise store_error(self.uri, exc) from None
        return self._experiment_id

    def _create_experiment(self) -> None:
        client = self._client
        with _store_lock(self.uri):  # two mlp-lab processes must not both create it
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                artifacts = _experiment_artifacts(self.uri, self.experiment)
                found = client.get_experiment(client.create_experiment(self.experiment, artifact_location=artifacts))
        if found.lifecycle_stage == "deleted":  # deleted since the store was opened
            raise deleted_experiment(found, self.uri)
        self._use(found)

    def _use(self, experiment: Any) -> None:
        import mlflow

        check_artifact_location(experiment.artifact_location)
        mlflow.set_tracking_uri(self.uri)  # MLflow's own, process-wide: this store's, not the last one opened
        mlflow.set_experiment(experiment_id=experiment.experiment_id)  # where MLflow puts logged models
        self._experiment_id = experiment.experiment_id

    def start_run(
        self, name: str, params: dict[str, Any], tags: dict[str, str] | None = None, parent: str | None = None
    ) -> RunLog:
        """A new run with ``params`` logged (a child of ``parent`` when given); created in the background."""
        tags = dict(tags or {})
        if parent:
            tags["mlflow.parentRunId"] = parent
        return RunLog(self, name, params, tags)

    def report_group(self, parent_id: str, width: int) -> str:
        """The comparison of a group's runs as a table ``width`` columns wide, logged on its parent run too."""
        import io

        from mlp_lab import compare

        text = io.StringIO()
        compare.report_group(self, parent_id, out=text, width=width)
        return text.getvalue()

    def create_run(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> tuple[str, str]:
        """Create a RUNNING run with ``params`` and ``tags`` now; returns its id and artifact URI."""
        client = self.client
        from mlflow.entities import Param

        run = client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        items = [Param(k, _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i : i + 100])
        return run_id, run.info.artifact_uri


class RunLog:
    """One run. A background thread creates it, then writes what is queued, in order.

    Metrics (``log_series``, ``log_metrics``) and datasets are queued and return at once; they are
    gathered for ``metrics_interval()`` seconds (or until :meth:`push` or :meth:`flush`) and
    written in order, metrics in batches of up to 1000, so a training step never waits for the store. Figures, texts,
    models, tags and ``end`` are written by the caller once the run exists. Call :meth:`ready`
    before importing MLflow or matplotlib in the caller. The first queued write that fails is
    raised, as a :class:`TrackingError`, by the next call that queues (or handed to
    ``on_write_error``), so training stops then; :meth:`flush` raises the store's error again.
    """

    def __init__(self, tracker: Tracker, name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        self.tracker = tracker
        self._run_id: str | None = None
        self.artifact_uri: str | None = None
        self._created = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self.name = name
        self._error: BaseException | None = None
        self._told = False  # whether the first failed write has been reported (raised here, or to on_write_error)
        self.on_write_error: Callable[[TrackingError], None] | None = None  # else the next log_* call raises it
        self._ended = False
        self._interval = metrics_interval()
        self._thread = threading.Thread(target=self._work, args=(name, params, tags), name=f"mlflow-run-{name}", daemon=True)
        self._thread.start()

    @property
    def run_id(self) -> str:
        """The run's id, once it exists (waits for the store and the run)."""
        self._created.wait()
        if self._run_id is None:
            self.tracker.wait()
            raise self._error or RuntimeError("the run was not created")
        return self._run_id

    @property
    def client(self) -> MlflowClient:
        return self.tracker.client

    def ready(self) -> RunLog:
        """Wait until the run exists (and with it the store, and MLflow and matplotlib imported).

        :class:`StoreError` when the store cannot take it (a read-only database, say).
        """
        try:
            self.run_id  # noqa: B018 - waits, or raises why the run does not exist
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever MLflow's store raised
            raise StoreError(f"cannot create a run in the MLflow store {self.tracker.uri}: {first_line(exc)}") from None
        return self

    # -- metrics -------------------------------------------------------------------------------
    def log_series(self, key: str, values: Iterable[float], first_step: int) -> None:
        """Queue ``values`` as metric ``key`` at steps ``first_step, first_step + 1, ...``."""
        self._check_store()
        now = int(time.time() * 1000)
        self._queue.put([(key, float(v), first_step + i, now) for i, v in enumerate(values)])
        self._raise_write_error()  # after queueing: these may still be written

    def log_metrics(self, metrics: dict[str, float], step: int, now: bool = False) -> None:
        """Queue several metrics at one step; with ``now``, write them at once (waits for the run)."""
        self._check_store()
        stamp = int(time.time() * 1000)
        if not now:
            self._queue.put([(k, float(v), step, stamp) for k, v in metrics.items()])
            self._raise_write_error()
            return
        self._raise_write_error()
        run_id = self.run_id
        from mlflow.entities import Metric

        records = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        with self.writing():
            self.client.log_batch(run_id, metrics=records, synchronous=True)

    def push(self) -> None:
        """Start writing what is queued now, without waiting for it (training is over: the CPU is free)."""
        if not self._ended:
            self._queue.put(_FLUSH)

    def flush(self) -> None:
        """Wait until everything queued is in the store."""
        if not self._ended:
            self._queue.put(_FLUSH)
            self._queue.join()
        self.ready()
        if self._error is not None:
            raise self._error

    def _check_store(self) -> None:
        if self.tracker.failed:  # stop training early: nothing it does can be logged
            self.tracker.wait()

    def _raise_write_error(self) -> None:
        if self._error is not None and not self._told:  # a write failed: stop training now, not once it is over
            self._told = True
            raise self.write_error(self._error)

    def write_error(self, exc: BaseException) -> TrackingError:
        """What a failed write of this run's records is reported as (a queued one: once, while it trains)."""
        error = TrackingError(f"the MLflow store could not write what run {self.name} logged: {store_refusal(exc)}")
        error.__cause__ = exc
        return error

    def _work(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        try:
            self._run_id, self.artifact_uri = self.tracker.create_run(name, params, tags)
        except BaseException as exc:  # noqa: BLE001 - reported by run_id, flush and end
            self._error = exc
        finally:
            self._created.set()
        while True:
            items = [self._queue.get()]
            try:  # whatever fails, every item taken is marked done and _STOP ends the loop: nobody waits for ever
                if items[0] is not _FLUSH and items[0] is not _STOP:  # gather more, to write later and in larger batches
                    deadline, count = time.monotonic() + self._interval, 0
                    while count < HOLD:
                        count += len(items[-1]) if isinstance(items[-1], list) else 1
                        try:
                            items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                        except queue.Empty:
                            break
                        if items[-1] is _FLUSH or items[-1] is _STOP:
                            break
                if self._run_id is not None:
                    self._write(items)
            except BaseException as exc:  # noqa: BLE001 - reported by flush(), and the first while training
                if self._error is None:
                    self._told = self.on_write_error is not None
                    self._error = exc
                    if self.on_write_error is not None:
                        with contextlib.suppress(Exception):
                            self.on_write_error(self.write_error(exc))
            finally:
                for _ in items:
                    self._queue.task_done()
            if items[-1] is _STOP:
                return

    def _write(self, items: list[Any]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, v, ts, s) for item in items if isinstance(item, list) for (k, v, s, ts) in item]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self._run_id, metrics=metrics[i : i + BATCH], synchronous=True)
        for item in items:
            if callable(item):
                item()

    # -- the rest ------------------------------------------------------------------------------
    def set_tags(self, tags: dict[str, Any]) -> None:
        run_id = self.run_id
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, _param_str(v)) for k, v in tags.items()])

    def log_params(self, params: dict[str, Any]) -> None:
        run_id = self.run_id
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, _param_str(v)) for k, v in params.items()])

    def log_dataset(self, name: str, digest: str, source: str, features: Any, targets: Any, context: str) -> None:
        """Queue a dataset input (name, digest, schema, source) for the run.

        ``features`` and ``targets`` are arrays or :class:`ArrayShape` (MLflow records their shape
        and dtype; the digest is given).
        """

        def write() -> None:
            import mlflow.data
            from mlflow.entities import DatasetInput, InputTag

            x, y = (a.stand_in() if isinstance(a, ArrayShape) else a for a in (features, targets))
            with warnings.catch_warnings():  # MLflow registers the local-file source twice and warns about it
                warnings.simplefilter("ignore", UserWarning)
                ds = mlflow.data.from_numpy(x, targets=y, source=source, name=name, digest=digest)
            tag = InputTag(key="mlflow.data.context", value=context)
            inputs = [DatasetInput(dataset=ds._to_mlflow_entity(), tags=[tag])]
            for attempt in range(3):  # two runs starting at once may both insert the same new dataset: one loses
                try:
                    self.client.log_inputs(self._run_id, datasets=inputs)
                    return
                except Exception:
                    if attempt == 2:
                        raise
                    time.sleep(0.2)

        self._check_store()
        self._queue.put(write)
        self._raise_write_error()

    def log_figure(self, figure: Any, path: str) -> None:
        """Log a matplotlib figure, or the figure a callable returns once the run is ready."""
        run_id = self.run_id
        drawn = figure() if callable(figure) else figure
        with self.writing():
            self.client.log_figure(run_id, drawn, path)

    def log_text(self, text: str, path: str) -> None:
        run_id = self.run_id
        with self.writing():
            self.client.log_text(run_id, text, path)

    def log_file(self, content: bytes, path: str) -> None:
        """Log ``content`` as the artifact ``path`` (a figure already drawn, say)."""
        import tempfile

        run_id = self.run_id
        with tempfile.TemporaryDirectory(prefix="mlp-lab-artifact-") as folder, self.writing():
            local = Path(folder) / Path(path).name
            local.write_bytes(content)
            self.client.log_artifact(run_id, str(local), str(Path(path).parent) if Path(path).parent != Path(".") else None)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """What the store raises while writing this run's records, as a :class:`TrackingError` saying so."""
        try:
            yield
        except TrackingError:
            raise
        except Exception as exc:
            raise self.write_error(exc) from exc

    def log_model(self, model_file: bytes, input_example: Any, pip_requirements: list[str], step: int) -> str:
        """Log the run's model under ``model`` (see :mod:`mlp_lab.pyfunc_model`); returns its URI.

        ``model_file`` is :func:`mlp_lab.model_file.save`'s bytes. MLflow copies onto the logged
        model (what its Models view shows) the run's metrics at ``step`` that are in the store:
        write them first (``log_metrics(..., now=True)``).
        """
        run_id = self.run_id
        import tempfile

        import mlflow
        import mlflow.pyfunc
        from mlflow.models import Model

        from mlp_lab import pyfunc_model

        mlflow.set_tracking_uri(self.tracker.uri)
        with tempfile.TemporaryDirectory(prefix="mlp-lab-model-") as folder, warnings.catch_warnings(), self.writing():
            warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
            path = Path(folder) / "model.pt"
            path.write_bytes(model_file)
            info = Model.log(
                artifact_path=None,
                name="model",
                flavor=mlflow.pyfunc,
                run_id=run_id,
                python_model=pyfunc_model.CODE,
                artifacts={pyfunc_model.ARTIFACT: str(path)},
                signature=pyfunc_model.signature(input_example),
                pip_requirements=pip_requirements,
                step=step,
            )  # no input example: MLflow would load the model, and torch, to check it (the tests use the model instead)
        return info.model_uri

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Flush metrics and close the run as FINISHED, FAILED or KILLED (recording ``error``); stops the thread.

        A run whose records could not all be written does not finish: the write error is raised
        first. Ended otherwise, a write error already reported is not raised again.
        """
        if status == "FINISHED":
            self._raise_write_error()
        try:
            try:
                self.flush()
            except BaseException as exc:
                if status == "FINISHED" or exc is not self._error or not self._told:
                    raise
        finally:
            if not self._ended:
                self._ended = True
                self._queue.put(_STOP)
            if error:
                self.set_tags({"mlp_lab.error": error[:5000], "mlflow.note.content": f"**{status}**: {error[:5000]}"})
            self.client.set_terminated(self.run_id, status=status)


_FLUSH = object()  # queue markers: write what is gathered now; and end the thread
_STOP = object()


def prepare_for_runs(figures: bool = True) -> None:
    """Import what runs need later (datasets, the model flavour, with ``figures`` matplotlib), in this thread.

    Also fill MLflow's map of installed packages (logging a model with pinned requirements builds
    it on first use, reading every installed distribution's metadata), and import GitPython
    (MLflow looks up the source's commit for a logged model).
    """
    if figures:
        from mlp_lab.figures import prepare

        prepare()
    import mlflow.data  # noqa: F401
    import mlflow.entities  # noqa: F401
    import mlflow.models  # noqa: F401
    import mlflow.pyfunc  # noqa: F401

    with contextlib.suppress(ImportError):
        import git  # noqa: F401
    try:
        from mlflow.utils import requirements_utils

        if requirements_utils._PACKAGES_TO_MODULES is None:
            requirements_utils._init_packages_to_modules_map()
    except Exception:  # noqa: BLE001 - MLflow's private cache: without it, logging the model builds it
        pass


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """For a local SQLite store, an exclusive lock on ``<database>.lock`` beside it (POSIX; elsewhere none)."""
    try:
        import fcntl
    except ImportError:  # Windows
        fcntl = None  # type: ignore[assignment]
    database = sqlite_path(uri)
    if fcntl is None or database is None:
        yield
        return
    try:
        lock = open(database.with_suffix(".lock"), "a")  # noqa: SIM115 - closed below, after the lock is let go
    except OSError as exc:  # the folder takes no new files: said of the store, not of the lock file
        lock_file = database.with_suffix(".lock")
        why = f"cannot write in {lock_file if lock_file.exists() else database.parent} ({exc.strerror or exc})"
        raise StoreError(f"cannot open the MLflow store {uri}: {why}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _create_sqlite_store(uri: str) -> None:
    """Create a new local SQLite store whole or not at all (call it under :func:`_store_lock`).

    MLflow creates a store's tables in some thirty migrations, each committed on its own: a process
    killed among them (``kill -9``, a closed laptop) would leave a store that no later run can open
    ("table ... already exists"). So the tables are made in a file beside it, under a name of its
    own (MLflow keeps the stores it opened by URI), which then takes the store's name, unless a
    store appeared there meanwhile (made by ``mlflow server``, say): that one is kept. Files left by
    creations cut short are removed.
    """
    from mlflow import MlflowClient

    database = sqlite_path(uri)
    if database is None or database.exists():
        return
    for leftover in database.parent.glob(f".{database.name}.creating-*"):
        leftover.unlink(missing_ok=True)
    partial = database.with_name(f".{database.name}.creating-{os.getpid()}-{time.monotonic_ns()}")
    try:
        client = MlflowClient(f"sqlite:///{partial}")  # creates the tables
        engine = getattr(getattr(getattr(client, "_tracking_client", None), "store", None), "engine", None)
        if engine is not None:
            engine.dispose()  # MLflow keeps the store: let go of the file before it is renamed
        try:
            os.link(partial, database)  # fails, rather than replaces, if a store appeared meanwhile
        except FileExistsError:
            pass
        except OSError:  # no hard links here (Windows' FAT, some network folders): a rename, checked first
            if not database.exists():
                os.rename(partial, database)
    finally:
        partial.unlink(missing_ok=True)
        partial.with_name(partial.name + "-journal").unlink(missing_ok=True)


def _experiment_artifacts(uri: str, experiment: str) -> str | None:
    """The experiment's folder under the store's artifact root, named after it: one path segment, whatever the
    name holds (``../x`` or ``a/b`` would leave the root or nest), with a hash of the name where it had to change."""
    import hashlib
    import re

    root = default_artifact_root(uri)
    if root is None:
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._")[:100] or "experiment"
    if folder != experiment:
        folder += "-" + hashlib.sha256(experiment.encode()).hexdigest()[:8]
    return f"{root}/{folder}"


def _param_str(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def quiet_mlflow_logs() -> None:
    """Keep MLflow's informational chatter (table creation, pickling advice, its own use of a deprecated
    SQLAlchemy loader) off the terminal, and out of the warnings summary of a plugin's tests."""
    import logging

    warnings.filterwarnings("ignore", message="The ``noload`` loader strategy is deprecated")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"alembic\.")  # its advice on MLflow's migrations

    for name in ("mlflow.store.db.utils", "mlflow.pyfunc", "mlflow.models.model", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING if name != "mlflow.pyfunc" else logging.ERROR)
    db = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _RaisedAnyway) for f in db.filters):
        db.addFilter(_RaisedAnyway())


class _RaisedAnyway:
    """Drops MLflow's logged database errors (a traceback, then the error is raised: mlp-lab says it in one line);
    its warnings, such as a database it is still retrying to reach, stay."""

    def filter(self, record: Any) -> bool:
        import logging

        return record.levelno < logging.ERROR
