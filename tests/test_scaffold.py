"""``mlp-lab new-plugin``: a ready package, refusals with one-line errors, and its test passing the kit."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlp_lab.registry import get_registry

from .conftest import subprocess_env

FILES = ["README.md", "pyproject.toml", "relu_mlp/__init__.py", "relu_mlp/model.py", "tests/test_relu_mlp.py"]


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_new_plugin_writes_a_package_with_the_entry_point(run_cli, store):
    result = run_cli("new-plugin", "Relu_MLP")  # normalized to relu-mlp, as pip would
    assert result.exit_code == 0, result.output
    folder = store.parent / "relu-mlp"
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    assert files_under(folder) == FILES
    meta = tomllib.loads((folder / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "relu-mlp"
    assert meta["project"]["entry-points"]["mlp_lab"] == {"relu-mlp": "relu_mlp"}
    assert any(dep.startswith("mlp-lab") for dep in meta["project"]["dependencies"])
    assert meta["tool"]["setuptools"]["packages"] == ["relu_mlp"]
    assert 'mlp_lab_conformance("relu-mlp")' in (folder / "tests" / "test_relu_mlp.py").read_text()
    assert "pip install -e" in (folder / "README.md").read_text()
    for py in ("relu_mlp/__init__.py", "relu_mlp/model.py", "tests/test_relu_mlp.py"):
        compile((folder / py).read_text(), py, "exec")
    assert "relu-mlp" in result.output and "mlp-lab run --plugin relu-mlp" in result.output
    steps = result.output.split("Next:\n", 1)[1].splitlines()
    assert all(Path(shlex.split(line)[0]).is_absolute() for line in steps[:4]), steps  # this Python's, venv active or not
    assert steps[-1].endswith("mlp-lab plugins --guide") and "mlp-lab plugins --guide" in (folder / "README.md").read_text()


def test_a_name_that_is_not_a_python_identifier_gets_a_module_that_is(run_cli, store, tmp_path):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    result = run_cli("new-plugin", "2layer", "--dir", tmp_path / "two")
    assert result.exit_code == 0, result.output
    meta = tomllib.loads((tmp_path / "two" / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["mlp_lab"] == {"2layer": "mlp_lab_2layer"}
    assert (tmp_path / "two" / "mlp_lab_2layer" / "model.py").is_file()


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("bad name", "not a valid distribution name"),
        ("x-", "not a valid distribution name"),
        ("émile", "not a valid distribution name"),
        ("scratch", "already an implementation"),
        ("mlp-lab", "mlp-lab itself"),
        ("all", "'all' is reserved"),
        ("pytest", "module named 'pytest' is already importable"),
    ],
)
def test_bad_names_are_refused_with_one_line_and_nothing_written(run_cli, store, name, says):
    result = run_cli("new-plugin", "--", name)
    assert result.exit_code == 2
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert list(store.parent.iterdir()) == []


def test_an_existing_folder_is_never_overwritten(run_cli, store, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    result = run_cli("new-plugin", "relu-mlp", "--dir", target)
    assert result.exit_code == 2 and "refusing to overwrite" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert files_under(target) == ["keep.txt"] and (target / "keep.txt").read_text() == "mine"
    (tmp_path / "afile").write_text("x")
    assert run_cli("new-plugin", "relu-mlp", "--dir", tmp_path / "afile").exit_code == 2
    under_a_file = run_cli("new-plugin", "relu-mlp", "--dir", tmp_path / "afile" / "x")
    assert (under_a_file.exit_code, under_a_file.stderr.strip()) == (2, f"Error: {tmp_path / 'afile'}: not a folder")
    missing = run_cli("new-plugin", "relu-mlp", "--dir", tmp_path / "nope" / "x")
    assert (missing.exit_code, missing.stderr.strip()) == (2, f"Error: {tmp_path / 'nope'}: no such folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("new-plugin", "relu-mlp", "--dir", empty).exit_code == 0  # an empty folder is fine
    assert files_under(empty) == FILES
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_a_folder_that_cannot_be_written_is_one_line(run_cli, store):
    result = run_cli("new-plugin", "relu-mlp", "--dir", "/proc/relu-mlp")  # /proc takes no new folders, even as root
    assert result.exit_code == 2 and result.stderr.startswith("Error: cannot write into /proc")
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_scaffold_installed_as_a_distribution_passes_its_own_conformance_test(run_cli, store, tmp_path, monkeypatch):
    """``pytest`` in the new package's folder, as its author runs it: the generated test finds the kit's
    fixture through the pytest11 entry point and the plugin through a real dist-info entry point."""
    folder = tmp_path / "relu-mlp"
    assert run_cli("new-plugin", "relu-mlp", "--dir", folder).exit_code == 0
    site = tmp_path / "site"
    shutil.copytree(folder / "relu_mlp", site / "relu_mlp")
    info = site / "relu_mlp-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: relu-mlp\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[mlp_lab]\nrelu-mlp = relu_mlp\n")
    monkeypatch.syspath_prepend(str(site))
    get_registry.cache_clear()
    assert get_registry().get("relu-mlp").distribution == "relu-mlp"
    env = subprocess_env(PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=folder, env=env, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed in " in tested.stdout  # and no warnings: MLflow's own deprecation is not the author's to see
