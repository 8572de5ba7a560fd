"""Devices: where a run trains, what it logs about the device, the compiled step; CUDA checks skip without a GPU."""

from __future__ import annotations

import math

import pytest
import torch
from mlflow import MlflowClient

from mlp_lab import data, training
from mlp_lab.registry import get_registry

from .conftest import runs_in

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def only_run(store):
    (run,) = runs_in(store)
    return run


def test_cpu_run_logs_device_name_memory_and_peak_memory(run_cli, store):
    result = run_cli("run", "--plugin", "scratch", "--steps", "20", "--tiny", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    run = only_run(store)
    p, m = run.data.params, run.data.metrics
    assert p["device"] == "cpu" and p["compile"] == "False"
    assert p["device_name"] and float(p["device_memory_gb"]) > 0 and int(p["cpu_threads"]) >= 1
    assert 50 < m["peak_memory_mb"] < 100_000  # the process's peak resident memory, in MiB
    assert "compile_time_s" not in m


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_one_line_and_no_run(run_cli, store):
    result = run_cli("run", "--plugin", "scratch", "--steps", "20", "--device", "cuda")
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: --device cuda: no CUDA device is available here"
    assert runs_in(store) == []


def test_losses_are_fetched_once_per_interval_not_every_step():
    """The loop hands losses over in blocks (one device sync per interval), each block complete and in order."""
    impl = get_registry().get("scratch")
    hp = impl.hyperparams({"steps": 60, "eval_every": 20})
    torch.manual_seed(0)
    model = impl.model_class()(hp)
    calls = []
    summary = training.train(
        model, data.load("tiny"), hp, 0, lambda values, first: calls.append((first, len(values))), lambda e: None
    )
    assert calls == [(0, 20), (20, 20), (40, 20)]
    assert [e.step for e in summary.evaluations] == [0, 20, 40, 60]
    times = [e.train_time_s for e in summary.evaluations]
    assert times[0] == 0.0 and times == sorted(times) and times[-1] == pytest.approx(summary.train_time_s)


def test_compile_without_a_cxx_compiler_is_one_line_and_no_run(run_cli, store, monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    result = run_cli("run", "--plugin", "scratch", "--steps", "20", "--tiny", "--device", "cpu", "--compile")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("Error: --compile on the CPU needs a C++ compiler")
    assert runs_in(store) == []


@pytest.mark.slow
def test_compiled_step_on_cpu_trains_to_the_same_accuracy(run_cli, store):
    """torch.compile of the training step (inductor's C++ kernels here): the same result, compile time apart."""
    args = ("run", "--plugin", "scratch", "--steps", "30", "--tiny", "--device", "cpu", "-q")
    assert run_cli(*args).exit_code == 0
    result = run_cli(*args, "--compile")
    assert result.exit_code == 0, result.output
    runs = {r.data.params["compile"]: r for r in runs_in(store)}
    eager, compiled = runs["False"].data.metrics, runs["True"].data.metrics
    assert compiled["test_accuracy"] == pytest.approx(eager["test_accuracy"], abs=0.02)
    assert compiled["final_train_loss"] == pytest.approx(eager["final_train_loss"], rel=1e-3)
    assert compiled["compile_time_s"] > 0 and math.isfinite(compiled["train_time_s"])


@CUDA
@pytest.mark.parametrize("compile_step", [False, True])
def test_cuda_training_keeps_data_on_the_device_without_a_sync_per_step(compile_step):
    impl = get_registry().get("scratch")
    hp = impl.hyperparams({"steps": 200, "eval_every": 100})
    torch.manual_seed(0)
    model = impl.model_class()(hp).to("cuda")
    d = data.load("tiny").to("cuda")
    assert d.train.x.is_cuda and d.test.x.is_cuda
    training.train(model, d, hp, 0, lambda v, f: None, lambda e: None, compile=compile_step)  # warm-up, compiles
    syncs = []
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with pytest.warns(UserWarning) as caught:
            summary = training.train(model, d, hp, 0, lambda v, f: syncs.append(f), lambda e: None, compile=compile_step)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    sync_warnings = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(sync_warnings) < 40  # a few per evaluation and hand-over, not one per step (200)
    assert summary.steps == 200 and len(syncs) == 2


@CUDA
def test_cuda_run_logs_the_gpu(run_cli, store):
    result = run_cli("run", "--plugin", "nn-module", "--steps", "50", "--tiny", "--device", "cuda", "-q")
    assert result.exit_code == 0, result.output
    run = only_run(store)
    assert run.data.params["device"] == "cuda" and float(run.data.params["device_memory_gb"]) > 1
    assert run.data.params["device_name"] == torch.cuda.get_device_name()
    assert run.data.metrics["peak_memory_mb"] > 0


def test_store_that_cannot_be_opened_is_one_line_exit_2_and_no_run(run_cli, store):
    """The store opens in the background while training starts; its failure still ends the command cleanly."""
    result = run_cli("run", "--plugin", "scratch", "--steps", "3000", "--tiny", "--tracking-uri", "bogus://nowhere", "-q")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot open the MLflow store bogus://nowhere:"), result.stderr
    assert "Traceback" not in result.stderr and not store.exists()


def test_group_with_a_bad_store_is_one_line_exit_2(run_cli, store):
    result = run_cli(
        "run", "--plugin", "scratch", "--plugin", "autograd", "--steps", "10", "--tiny", "--tracking-uri", "bogus://x", "-q"
    )
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("Error: cannot open the MLflow store bogus://x:")


def test_metrics_are_written_in_few_large_batches(store, monkeypatch):
    """Per-step losses reach the store complete, in batches of up to 1000 rather than one call per interval."""
    from mlp_lab.tracking import Tracker

    tracker = Tracker(None, "batches")
    calls = []
    original = tracker.client.log_batch

    def spy(run_id, metrics=(), **kw):
        calls.append(len(metrics))
        return original(run_id, metrics=metrics, **kw)

    monkeypatch.setattr(tracker.client, "log_batch", spy)
    run = tracker.start_run("r", {"a": 1})
    for first in range(0, 2500, 100):
        run.log_series("train_loss", [float(first + i) for i in range(100)], first)
    run.end()
    history = MlflowClient(tracker.uri).get_metric_history(run.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(2500))
    metric_calls = [n for n in calls if n]
    assert sum(metric_calls) == 2500 and len(metric_calls) <= 5 and max(metric_calls) <= 1000


def test_compiling_keeps_dynamos_profiler_notice_off_the_terminal(caplog):
    """Compiling an optimiser's step makes Dynamo say, once, that it skips the profiler marks: dropped, other warnings kept."""
    import logging

    from mlp_lab.devices import compiled_train_step

    impl = get_registry().get("nn-module")
    compiled_train_step(impl.model_class()(impl.hyperparams({})), torch.device("cpu"))
    logger = logging.getLogger("torch._dynamo.variables.ctx_manager")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Profiler record function %s will be ignored", "record_function")
        logger.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
    import inspect

    from torch._dynamo.variables import ctx_manager

    assert '"Profiler record function %s will be ignored"' in inspect.getsource(ctx_manager)  # the notice this torch logs
