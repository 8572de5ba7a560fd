"""The three seed plugins reproduce the notebook's figures with their default seed.

Plain PyTorch with the seed's protocol on this machine: test accuracy 0.820 (scratch), 0.813-0.819
(autograd), 0.872-0.882 (nn-module), train accuracy 1.000. Each plugin must land within 0.015.
scratch and autograd run the full 10,000-step protocol here (about 20 s each); nn-module, the slow
one (about 100 s), runs 1,500 steps, by which the notebook's run had already reached 0.873-0.877.
"""

from __future__ import annotations

import os

import pytest

from .conftest import runs_in


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    from click.testing import CliRunner

    from mlp_lab.cli import cli
    from mlp_lab.registry import get_registry

    folder = tmp_path_factory.mktemp("seed")
    get_registry.cache_clear()
    runner, before = CliRunner(), os.getcwd()
    os.chdir(folder)  # ./mlruns is the store, as for a user in this folder
    try:
        for args in (["--plugin", "scratch", "--plugin", "autograd"], ["--plugin", "nn-module", "--steps", "1500"]):
            result = runner.invoke(cli, ["run", *args, "-q"], prog_name="mlp-lab", env={"MLFLOW_TRACKING_URI": None})
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(before)
    runs = runs_in(folder / "mlruns")
    return {r.data.params["plugin"]: r.data.metrics for r in runs if "plugin" in r.data.params}


@pytest.mark.parametrize(
    ("plugin", "low", "high"), [("scratch", 0.820, 0.820), ("autograd", 0.813, 0.819), ("nn-module", 0.872, 0.882)]
)
def test_seed_figures_reproduced(seed_runs, plugin, low, high):
    metrics = seed_runs[plugin]
    assert low - 0.015 <= metrics["test_accuracy"] <= high + 0.015
    assert metrics["train_accuracy"] == pytest.approx(1.0, abs=0.002)
