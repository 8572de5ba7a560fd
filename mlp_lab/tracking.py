"""MLflow tracking: where runs go, and everything a run logs. The only module that talks to MLflow.

Default store: ``sqlite:///mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts`` (created on
first use). ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` override it; a tracking server URL works
the same. Per-step metrics go through a background writer in batches, so a training step never
waits for the store.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_DIR = Path("mlruns")
BATCH = 1000  # MLflow accepts at most 1000 metrics in one log_batch call


def resolve_uri(uri: str | None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else the project store in ./mlruns (created now)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    DEFAULT_DIR.mkdir(exist_ok=True)
    return f"sqlite:///{(DEFAULT_DIR / 'mlflow.db').resolve()}"


def default_artifact_root(uri: str) -> str | None:
    """Artifacts beside a local SQLite store (``<store folder>/artifacts``); the server decides otherwise."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
    return None


class Tracker:
    """An MLflow experiment in a store: creates runs and logs to them."""

    def __init__(self, uri: str | None, experiment: str) -> None:
        import mlflow
        from mlflow import MlflowClient

        quiet_mlflow_logs()
        self.uri = resolve_uri(uri)
        mlflow.set_tracking_uri(self.uri)
        self.client: MlflowClient = MlflowClient(self.uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(experiment, artifact_location=_experiment_artifacts(self.uri, experiment))
        )
        mlflow.set_experiment(experiment_id=self.experiment_id)  # where MLflow puts logged models

    def start_run(
        self, name: str, params: dict[str, Any], tags: dict[str, str] | None = None, parent: str | None = None
    ) -> RunLog:
        """A new RUNNING run with ``params`` logged (a child of ``parent`` when given)."""
        from mlflow.entities import Param

        tags = dict(tags or {})
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        items = [Param(k, _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])
        return RunLog(self, run_id, run.info.artifact_uri)


class RunLog:
    """One run: metrics (batched, in the background), tags, datasets, figures, the model, the end."""

    def __init__(self, tracker: Tracker, run_id: str, artifact_uri: str) -> None:
        self.tracker = tracker
        self.client = tracker.client
        self.run_id = run_id
        self.artifact_uri = artifact_uri
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, name=f"mlflow-metrics-{run_id[:8]}", daemon=True)
        self._thread.start()

    # -- metrics -------------------------------------------------------------------------------
    def log_series(self, key: str, values: Iterable[float], first_step: int) -> None:
        """Queue ``values`` as metric ``key`` at steps ``first_step, first_step + 1, ...``."""
        now = int(time.time() * 1000)
        self._queue.put([(key, float(v), first_step + i, now) for i, v in enumerate(values)])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue several metrics at one step."""
        now = int(time.time() * 1000)
        self._queue.put([(k, float(v), step, now) for k, v in metrics.items()])

    def flush(self) -> None:
        """Wait until every queued metric is in the store."""
        self._queue.join()
        if self._error is not None:
            raise self._error

    def _write(self) -> None:
        from mlflow.entities import Metric

        while True:
            items = self._queue.get()
            pending = [items]
            try:  # take whatever else is queued, to send it in as few calls as possible
                while True:
                    pending.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            try:
                metrics = [Metric(k, v, ts, s) for chunk in pending for (k, v, s, ts) in chunk]
                for i in range(0, len(metrics), BATCH):
                    self.client.log_batch(self.run_id, metrics=metrics[i : i + BATCH], synchronous=True)
            except BaseException as exc:  # noqa: BLE001 - reported by flush()
                self._error = exc
            finally:
                for _ in pending:
                    self._queue.task_done()

    # -- the rest ------------------------------------------------------------------------------
    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, _param_str(v)) for k, v in tags.items()])

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, _param_str(v)) for k, v in params.items()])

    def log_dataset(self, name: str, digest: str, source: str, features: Any, targets: Any, context: str) -> None:
        """Record a dataset input (name, digest, schema, source) on the run."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        with warnings.catch_warnings():  # MLflow registers the local-file source twice and warns about it
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_numpy(features, targets=targets, source=source, name=name, digest=digest)
        tag = InputTag(key="mlflow.data.context", value=context)
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset=ds._to_mlflow_entity(), tags=[tag])])

    def log_figure(self, figure: Any, path: str) -> None:
        self.client.log_figure(self.run_id, figure, path)

    def log_text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)

    def log_model(self, python_model: Any, input_example: Any, pip_requirements: list[str]) -> str:
        """Log a pyfunc model under ``model``; returns its URI."""
        import mlflow
        import mlflow.pyfunc
        from mlflow.models import Model, infer_signature

        signature = infer_signature(input_example, python_model.predict(None, input_example))
        mlflow.set_tracking_uri(self.tracker.uri)
        info = Model.log(
            artifact_path=None,
            name="model",
            flavor=mlflow.pyfunc,
            run_id=self.run_id,
            python_model=python_model,
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements,
        )
        return info.model_uri

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Flush metrics and close the run as FINISHED, FAILED or KILLED (recording ``error``)."""
        try:
            self.flush()
        finally:
            if error:
                self.set_tags({"mlp_lab.error": error[:5000], "mlflow.note.content": f"**{status}**: {error[:5000]}"})
            self.client.set_terminated(self.run_id, status=status)


def _experiment_artifacts(uri: str, experiment: str) -> str | None:
    root = default_artifact_root(uri)
    return None if root is None else f"{root}/{experiment}"


def _param_str(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def quiet_mlflow_logs() -> None:
    """Keep MLflow's informational chatter (table creation, pickling advice) off the terminal."""
    import logging

    for name in ("mlflow.store.db.utils", "mlflow.pyfunc", "mlflow.models.model", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING if name != "mlflow.pyfunc" else logging.ERROR)
