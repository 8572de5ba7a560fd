"""Discovery through entry points: built-ins declared like third parties, broken plugins isolated."""

from __future__ import annotations

import json

from mlp_lab.registry import get_registry

GOOD = """
from mlp_lab import Option, hookimpl
from mlp_lab_plugins.seed import TANH_MSE

@hookimpl
def register_implementations(register):
    options = (*TANH_MSE, Option("decay_at", int, 5000), Option("decay", float, 0.1))
    register("extra", "A copy of scratch.", "mlp_lab_plugins.scratch:Scratch", defaults={"steps": 20}, options=options)
"""

BROKEN_IMPORT = "import no_such_module_anywhere\n"

BROKEN_HOOK = """
from mlp_lab import hookimpl

@hookimpl
def register_implementations(register):
    raise ValueError("registration exploded")
"""


def test_builtins_come_from_the_mlp_lab_distribution_entry_points():
    registry = get_registry()
    assert list(registry.implementations)[:3] == ["scratch", "autograd", "nn-module"]
    for name in ("scratch", "autograd", "nn-module"):
        impl = registry.implementations[name]
        assert (impl.plugin, impl.distribution, impl.builtin) == ("seed", "mlp-lab", True)
    assert registry.broken == []


def test_broken_plugins_are_reported_and_everything_else_works(plugin_dist, run_cli, store):
    plugin_dist("good-plugin", "good_mod", GOOD)
    plugin_dist("import-broken", "import_broken_mod", BROKEN_IMPORT)
    plugin_dist("hook-broken", "hook_broken_mod", BROKEN_HOOK)

    listing = run_cli("plugins", "--json")
    assert listing.exit_code == 0
    data = json.loads(listing.stdout)
    names = [i["name"] for i in data["implementations"]]
    assert names[:3] == ["scratch", "autograd", "nn-module"] and "extra" in names
    broken = {b["plugin"]: b for b in data["broken"]}
    assert broken["import_broken_mod"]["distribution"] == "import-broken"
    assert "No module named 'no_such_module_anywhere'" in broken["import_broken_mod"]["error"]
    assert "registration exploded" in broken["hook_broken_mod"]["error"]

    table = run_cli("plugins")
    assert table.exit_code == 0 and "import-broken" in table.stdout and "hook-broken" in table.stdout

    run = run_cli("run", "--plugin", "import_broken_mod", "--steps", "5")
    assert run.exit_code == 2
    assert run.stderr.strip().splitlines() == [
        "Error: plugin 'import_broken_mod' (import-broken 0.1) is broken: failed to import import_broken_mod: "
        "ModuleNotFoundError: No module named 'no_such_module_anywhere'"
    ]
    ok = run_cli("run", "--plugin", "extra", "--plugin", "scratch", "--steps", "20", "--tiny", "-q")
    assert ok.exit_code == 0, ok.output
    assert run_cli("--help").exit_code == 0


def test_load_plugins_env_selects_entry_points(monkeypatch):
    monkeypatch.setenv("MLP_LAB_LOAD_PLUGINS", "seed")
    assert {"scratch", "autograd", "nn-module"} <= set(get_registry().implementations)
    get_registry.cache_clear()
    monkeypatch.setenv("MLP_LAB_LOAD_PLUGINS", "")
    assert get_registry().implementations == {}


def test_no_plugins_loaded_is_a_clear_error(monkeypatch, run_cli):
    monkeypatch.setenv("MLP_LAB_LOAD_PLUGINS", "")
    result = run_cli("run", "--plugin", "scratch")
    assert result.exit_code == 2 and result.stderr.strip() == "Error: unknown plugin 'scratch'; known: none"
