"""Discovery for real: a scaffolded plugin, built as a wheel and installed into a fresh virtual
environment beside mlp-lab, is listed, runs, and sits beside scratch in a comparison group and in
``mlp-lab compare``.
Nothing is registered by hand: the installed entry point is what is proven. (That the scaffold's
own test passes the conformance kit is in test_scaffold.py.)

The fresh environment reuses this one's packages (torch, MLflow, ...) through a ``.pth`` file
naming this environment's site-packages, so nothing is downloaded; mlp-lab itself and the plugin
are installed into it from wheels with ``--no-deps``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from .conftest import REPO, runs_in, subprocess_env


def build_wheel(source: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    return next(out.glob(f"{source.name.replace('-', '_')}-*.whl"))


def fresh_venv(path: Path) -> Path:
    """A new venv without pip whose interpreter also sees this environment's site-packages (after its own)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "_host_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_scaffolded_wheel_in_a_fresh_venv_is_found_runs_compares_and_conforms(tmp_path, run_cli, store):
    made = run_cli("new-plugin", "relu-mlp", "--dir", tmp_path / "relu-mlp")
    assert made.exit_code == 0, made.output

    # mlp-lab's wheel from a copy of the sources (building in place would write into the checkout).
    src = tmp_path / "mlp-lab"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("mlp_lab", "plugins"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = [build_wheel(src, tmp_path / "wheels"), build_wheel(tmp_path / "relu-mlp", tmp_path / "wheels")]

    python = fresh_venv(tmp_path / "venv")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-compile"]
    subprocess.run([*pip, *map(str, wheels)], check=True, capture_output=True, text=True)
    mlp_lab = tmp_path / "venv" / "bin" / "mlp-lab"
    env = subprocess_env(OMP_NUM_THREADS="1")  # tiny tensors: one thread is faster, and fair to a shared machine
    env.pop("PYTHONPATH", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(mlp_lab), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    guide = run("plugins", "--guide")  # the plugin guide is installed with the wheel
    assert guide.returncode == 0 and guide.stdout.startswith("# Writing an mlp-lab plugin"), guide.stderr
    listed = run("plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    impls = {i["name"]: i for i in json.loads(listed.stdout)["implementations"]}
    relu = impls["relu-mlp"]
    assert (relu["distribution"], relu["version"], relu["plugin"], relu["builtin"]) == ("relu-mlp", "0.1.0", "relu-mlp", False)
    assert relu["location"].startswith(str(tmp_path / "venv")), relu["location"]  # the wheel's copy, in the fresh venv
    assert impls["scratch"]["location"].startswith(str(tmp_path / "venv"))  # mlp-lab's own wheel too
    assert [o["name"] for o in relu["options"]] == ["momentum"]
    assert (relu["hand_written_gradients"], impls["scratch"]["hand_written_gradients"]) == (False, True)  # read, not imported

    alone = run("run", "--plugin", "relu-mlp", "--tiny", "--steps", "30", "--quiet")
    assert alone.returncode == 0, alone.stderr
    assert "relu-mlp" in alone.stdout and "FINISHED" in alone.stdout

    both = run("run", "--plugin", "relu-mlp", "--plugin", "scratch", "--tiny", "--steps", "30", "--seeds", "0,1", "--quiet")
    assert both.returncode == 0, both.stderr
    table = [line for line in both.stdout.splitlines() if "FINISHED" in line]
    assert len(table) == 4 and sum("relu-mlp" in line for line in table) == 2 and sum("scratch" in line for line in table) == 2

    runs = runs_in(tmp_path / "mlruns")
    groups = [r for r in runs if r.data.tags.get("mlp_lab.kind") == "group"]
    assert len(groups) == 1 and groups[0].data.params["plugins"] == "relu-mlp,scratch"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == groups[0].info.run_id]
    assert sorted((r.data.params["plugin"], r.data.params["seed"], r.info.status) for r in children) == [
        ("relu-mlp", "0", "FINISHED"),
        ("relu-mlp", "1", "FINISHED"),
        ("scratch", "0", "FINISHED"),
        ("scratch", "1", "FINISHED"),
    ]
    relu_run = next(r for r in children if r.data.params["plugin"] == "relu-mlp")
    assert (relu_run.data.params["plugin_distribution"], relu_run.data.params["plugin_version"]) == ("relu-mlp", "0.1.0")
    assert relu_run.data.params["momentum"] == "0.9" and "test_accuracy" in relu_run.data.metrics

    compared = run("compare", "--format", "json")  # the last comparison group, read back from MLflow
    assert compared.returncode == 0, compared.stderr
    rows = {r["plugin"]: r for r in json.loads(compared.stdout)["rows"]}
    assert set(rows) == {"relu-mlp", "scratch"}
    assert all((r["runs"], r["runs_failed"], r["seeds"]) == (2, 0, "0,1") for r in rows.values())
    assert 0 <= rows["relu-mlp"]["test_accuracy_mean"] <= 1
