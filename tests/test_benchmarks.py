"""The benchmark's own honesty: references do the same arithmetic as the plugins, and the measurements are sound.

The speed goals themselves live in ``python -m benchmarks``, never in timed tests.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest
import torch

from benchmarks import cases, plain
from mlp_lab import data, training
from mlp_lab.registry import get_registry

from .conftest import REPO, subprocess_env


def test_reference_data_is_mlp_labs_data():
    ours, ref = data.load(), plain.load()
    for a, b in ((ours.train.x, ref.x), (ours.train.y, ref.y), (ours.train.onehot, ref.onehot), (ours.test.x, ref.test_x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["scratch", "autograd", "nn-module"])
def test_each_reference_computes_the_same_numbers_as_its_plugin(name):
    """Same seed, data, network and arithmetic: the per-step losses are equal to the last bit."""
    ref = cases.references()[name]
    impl = get_registry().get(name)
    hp = impl.hyperparams({"steps": 25, "eval_every": 5})
    random.seed(1337)
    torch.manual_seed(1337)
    summary = training.train(impl.model_class()(hp), data.load(), hp, 1337, lambda v, f: None, lambda e: None)
    result = ref.train(plain.load(), 25, 5, 1337)
    assert summary.losses == result.losses
    assert summary.final.test_accuracy == pytest.approx(result.test_accuracy)


def test_references_are_found_for_the_seed_plugins():
    assert {"scratch", "autograd", "nn-module"} <= set(cases.references())


def test_process_memory_is_the_measured_process_not_the_benchmark(tmp_path):
    """Peak memory of a child started from a large process is the child's own (a launcher sits between them)."""
    ballast = bytearray(300 * 2**20)  # this process grows by 300 MiB
    ballast[::4096] = b"x" * len(ballast[::4096])
    env = subprocess_env()
    small_wall, small_cpu, small = cases.measure_process([sys.executable, "-c", "pass"], tmp_path, env)
    _, _, big = cases.measure_process(
        [sys.executable, "-c", "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"], tmp_path, env
    )
    assert small < 100 and 200 < big < 300
    assert 0 < small_wall < 30 and 0 < small_cpu < 30
    del ballast


def test_a_failing_process_is_reported(tmp_path):
    with pytest.raises(RuntimeError, match="exited 3"):
        cases.measure_process([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], tmp_path, subprocess_env())


def test_reference_script_runs_alone_and_saves_what_mlp_lab_saves(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.ref_scratch", "--steps", "20", "--out", str(tmp_path / "o")],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["steps"] == 20 and 0 < result["test_accuracy"] <= 1
    assert (tmp_path / "o" / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert set(torch.load(tmp_path / "o" / "model.pt")) == {"w1", "b1", "w2", "b2"}


def test_reference_script_logs_what_mlp_lab_logs_to_mlflow_by_hand(tmp_path):
    """``--mlflow``, the end-to-end case's third side: a real run with every loss, the datasets, the figure, a model."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'plain.db'}"
    command = [sys.executable, "-m", "benchmarks.ref_scratch", "--steps", "20", "--mlflow", uri]
    subprocess.run(command, cwd=tmp_path, env={**subprocess_env(), "PYTHONPATH": str(REPO)}, capture_output=True, check=True)
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("plain").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["steps"] == "20"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == list(range(20))
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"mnist-training", "mnist-evaluation"}
    assert "loss_curve.png" in [a.path for a in client.list_artifacts(run.info.run_id)]
    mlflow.set_tracking_uri(uri)
    ref = plain.load()
    predicted = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(ref.test_x[:100].numpy())
    assert (predicted == ref.test_y[:100].numpy()).mean() > 0.5


def test_end_to_end_case_takes_turns_and_reports_against_both_references(monkeypatch):
    """The case's bookkeeping (the processes themselves are measured by the test above and by the benchmark)."""
    figures = {"ours": (26.0, 46.0, 470.0), "ref": (21.0, 40.0, 275.0), "tracked": (27.0, 45.0, 476.0)}
    measured = []

    def fake_measure(command, cwd, env):
        side = "tracked" if "--mlflow" in command else "ref" if "--out" in command else "ours"
        if "10" not in command:  # not a warm-up
            measured.append(side)
        return figures[side]

    monkeypatch.setattr(cases, "measure_process", fake_measure)
    rows = list(cases.end_to_end_case(cases.Settings(loop_steps=2000, repeats=3, log=lambda _: None)))
    assert measured == ["ours", "ref", "tracked", "ref", "tracked", "ours", "tracked", "ours", "ref"]  # every side in every place
    assert [(r.unit, r.goal, r.passed) for r in rows] == [
        ("s", 1.15, False),
        ("s", None, None),
        ("MiB", 1.5, False),
        ("MiB", None, None),
    ]
    assert [round(r.ratio, 3) for r in rows] == [round(26 / 21, 3), round(26 / 27, 3), round(470 / 275, 3), round(470 / 476, 3)]
    assert "by hand" in rows[1].case and "by hand" in rows[3].case


def test_benchmark_command_prints_rows_and_json(tmp_path):
    """``python -m benchmarks`` end to end, on its cheapest case."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "startup", "--repeat", "1", "--json", str(tmp_path / "b.json")],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "start-up: mlp-lab --help" in out.stdout and "ratio" in out.stdout
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["case"].split(" (")[0] for r in rows] == ["start-up: mlp-lab --help", "start-up: mlp-lab plugins"]
    assert all(r["mlp_lab"] > 0 and r["reference"] > 0 and r["passed"] in (True, False) for r in rows)


def test_unknown_case_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "nope"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and "unknown case(s) nope" in out.stderr


@pytest.mark.parametrize("script", ["benchmarks.gpu", "benchmarks.nn_module_step"])
def test_gpu_script_without_cuda_says_so(tmp_path, script):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    out = subprocess.run(
        [sys.executable, "-m", script, "--json", str(tmp_path / "g.json")], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 2 and "no CUDA device here" in out.stderr
    assert not (tmp_path / "g.json").exists()


def test_full_mnist_reference_reports_time_to_target():
    """The GPU baseline's recipe, on the small set (one batch of 512 per epoch) so that it runs here."""
    from benchmarks import ref_full_mnist

    r = ref_full_mnist.train(plain.load(), epochs=3, eval_every=1, target=0.0)
    assert r["steps"] == 3 and 0 < r["test_accuracy"] <= 1
    assert 0 < r["time_to_target_s"] <= r["train_time_s"]  # reached at the first evaluation


@pytest.mark.slow
def test_gpu_script_logic_on_the_cpu(tmp_path):
    """``benchmarks.gpu`` itself (reference, eager and compiled runs, the JSON), on the CPU with few steps."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--steps", "20", "--plugins", "scratch", "--skip-full"]
        + ["--json", str(tmp_path / "g.json")],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = json.loads((tmp_path / "g.json").read_text())["rows"]
    assert row["case"] == "seed protocol: scratch, 20 steps"
    assert row["plain_train_s"] > 0 and row["mlp_lab_train_s"] > 0 and row["compiled_train_s"] > 0
    assert row["compiled_compile_s"] > 0
    assert row["compiled_test_accuracy"] == pytest.approx(row["mlp_lab_test_accuracy"], abs=0.02)


def test_gpu_script_trains_untracked_where_mlflow_is_missing():
    """Where MLflow is absent (the GPU image), the same seeding and loop run without tracking: same numbers."""
    from benchmarks import gpu

    d = data.load("tiny")
    summary = gpu.run_plugin("scratch", d, torch.device("cpu"), None, False, steps=20)
    impl = get_registry().get("scratch")
    hp = impl.hyperparams({"steps": 20})
    random.seed(1337)
    torch.manual_seed(1337)
    again = training.train(impl.model_class()(hp), d, hp, 1337, lambda v, f: None, lambda e: None)
    assert summary.losses == again.losses and summary.steps == 20
    assert gpu.time_to(summary, 0.0) == 0.0 and math.isnan(gpu.time_to(summary, 1.1))
