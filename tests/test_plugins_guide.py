"""The plugin guide (mlp_lab/docs/plugins.md) stays true: every hook and contract method with its exact signature, and a
minimal plugin that really is minimal and really passes the conformance kit."""

from __future__ import annotations

import inspect
import re

import pytest

from mlp_lab import hookspecs, testing
from mlp_lab.model import REQUIRED, Model
from mlp_lab.registry import Register

from .conftest import REPO

GUIDE = (REPO / "mlp_lab" / "docs" / "plugins.md").read_text()


def signature_text(func, name: str | None = None, drop_self: bool = False) -> str:
    """``def name(arg: annotation = default, ...) -> annotation``, annotations as written in the source."""
    sig = inspect.signature(func)
    ann = lambda a: a if isinstance(a, str) else inspect.formatannotation(a)  # noqa: E731
    parts = []
    for p in sig.parameters.values():
        if drop_self and p.name == "self":
            continue
        text = p.name + (f": {ann(p.annotation)}" if p.annotation is not p.empty else "")
        parts.append(text + (f" = {p.default!r}" if p.default is not p.empty else ""))
    ret = f" -> {ann(sig.return_annotation)}" if sig.return_annotation is not sig.empty else ""
    return f"def {name or func.__name__}({', '.join(parts)}){ret}"


HOOKS = [f for f in vars(hookspecs).values() if callable(f) and hasattr(f, "mlp_lab_spec")]


def test_there_are_hooks_to_document():
    assert [h.__name__ for h in HOOKS] == ["register_implementations"]


@pytest.mark.parametrize("hook", HOOKS, ids=lambda h: h.__name__)
def test_every_hook_is_documented_with_its_exact_signature(hook):
    assert f"### `{hook.__name__}`" in GUIDE, f"no section for hook {hook.__name__}"
    assert signature_text(hook) in GUIDE, f"the plugin guide lacks or misstates: {signature_text(hook)}"
    for arg in inspect.signature(hook).parameters:
        assert f"- `{arg}`:" in GUIDE, f"argument {arg} of {hook.__name__} is not explained"


def test_the_register_callback_and_its_arguments_are_documented():
    text = signature_text(Register.__call__, "register", drop_self=True)
    assert text in GUIDE, text
    for arg in inspect.signature(Register.__call__).parameters:
        if arg != "self":
            assert f"- `{arg}`:" in GUIDE, f"register's argument {arg} is not explained"


@pytest.mark.parametrize("method", [*REQUIRED, "forward_backward"])
def test_every_contract_method_is_documented_with_its_exact_signature(method):
    assert signature_text(getattr(Model, method)) in GUIDE


def test_the_refusal_of_a_combination_of_options_is_documented_with_its_exact_signature():
    assert "@classmethod\n" + signature_text(Model.check_hyperparams.__func__) in GUIDE


def test_the_installed_guide_is_shown_by_mlp_lab_plugins(run_cli):
    result = run_cli("plugins", "--guide")
    assert result.exit_code == 0 and result.stdout == GUIDE


def test_discovery_rules_and_switches_are_documented():
    for words in ("`mlp_lab`", "MLP_LAB_LOAD_PLUGINS", "MLP_LAB_TRACE_PLUGINS", "`DISTRIBUTION:NAME`", "Built-in plugins"):
        assert words in GUIDE, words
    assert "mlp_lab/docs/plugins.md" in (REPO / "README.md").read_text()


def minimal_plugin() -> str:
    section = GUIDE.split("## A complete minimal plugin", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


def test_the_minimal_plugin_is_under_40_lines_and_passes_the_kit(plugin_dist, mlp_lab_conformance_store):
    code = minimal_plugin()
    assert len(code.strip().splitlines()) < 40
    entry = re.search(r'\[project.entry-points.mlp_lab\]\n(\S+) = "(\w+)"', GUIDE)
    assert entry is not None and entry.group(2) == "relu_dropout"
    plugin_dist("relu-dropout", "relu_dropout", code, entry_points={entry.group(1): entry.group(2)})
    assert testing.check_implementation("relu-dropout", mlp_lab_conformance_store)[:5] == [
        "registered",
        "predictions",
        "deterministic",
        "learns",
        "mlflow",
    ]


def test_the_guide_lists_every_reserved_option_name():
    from mlp_lab.options import RUN_PARAMS

    flat = " ".join(GUIDE.split())
    listed = flat.split("nor one of the parameters the core logs for every run:", 1)[1].split(". ", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", listed)) == RUN_PARAMS
