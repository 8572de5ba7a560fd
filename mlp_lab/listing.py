"""``mlp-lab plugins``: what was found, from where, with which options; and what is broken."""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from typing import Any

from mlp_lab.registry import Implementation, Problem, get_registry, load_filter, unmatched_in_load_filter

BOUNDS = (("min", ">="), ("max", "<="), ("above", ">"), ("below", "<"))


def plugin_listing() -> dict[str, Any]:
    """Implementations, broken plugins and name clashes, as plain data (the ``--json`` output)."""
    registry = get_registry()
    _read.cache_clear()  # sources as they are now
    return {
        "implementations": [
            {
                "name": impl.name,
                "description": impl.description,
                "plugin": impl.plugin,
                "distribution": impl.distribution,
                "version": impl.version,
                "builtin": impl.builtin,
                "location": impl.location,
                "model": impl.model if isinstance(impl.model, str) else f"{impl.model.__module__}:{impl.model.__qualname__}",
                "hand_written_gradients": hand_written_gradients(impl),
                "model_problem": model_problem(impl),  # what would fail its runs at once, read from the source; else null
                "defaults": {name: impl.default(name) for name in impl.all_options()},
                "options": [
                    {
                        "name": o.name,
                        "type": o.type.__name__,
                        "default": impl.default(o.name),  # the implementation's, as its runs use
                        "help": o.help,
                        **{k: getattr(o, k) for k in ("min", "max", "above", "below", "choices") if getattr(o, k) is not None},
                    }
                    for o in impl.options
                ],
            }
            for impl in registry.implementations.values()
        ],
        "broken": [_problem(p) for p in registry.broken],
        "clashes": [_problem(p) for p in registry.clashes],
        "load_filter": load_filter(),  # MLP_LAB_LOAD_PLUGINS's entry points; null when unset
        "load_filter_unmatched": unmatched_in_load_filter()[0],  # those no installed package has
    }


def _problem(problem: Problem) -> dict[str, Any]:
    """A problem as plain data; ``dropped`` only where a plugin had registered names before it broke."""
    return {k: v for k, v in vars(problem).items() if k != "dropped" or v}


def model_source(impl: Implementation) -> tuple[ast.Module | None, str | None]:
    """The parsed source of a model registered by path, or what keeps it from being read (its module missing,
    a syntax error): found without importing it (which would import torch)."""
    if not isinstance(impl.model, str):
        return None, None
    return _read(impl.model.partition(":")[0])


@functools.cache
def _read(module_name: str) -> tuple[ast.Module | None, str | None]:  # the variants share one module
    try:
        spec = importlib.util.find_spec(module_name)
    except Exception as exc:  # noqa: BLE001 - a parent package that fails to import, say
        return None, f"{module_name} cannot be found: {type(exc).__name__}: {exc}"
    if spec is None:
        return None, f"no module {module_name}"
    if not spec.origin or not spec.origin.endswith(".py"):  # compiled or without a file: not read, not a problem
        return None, None
    try:
        with open(spec.origin, encoding="utf-8") as f:
            return ast.parse(f.read(), filename=spec.origin), None
    except SyntaxError as exc:
        return None, f"{module_name}: SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    except (OSError, ValueError) as exc:
        return None, f"{module_name} cannot be read: {exc}"


def hand_written_gradients(impl: Implementation) -> bool | None:
    """Whether the model overrides ``forward_backward``; None where that cannot be told without importing it.

    A model registered by path is read, not imported (importing it would import torch): see :func:`_defines`.
    """
    if not isinstance(impl.model, str):
        return impl.model.has_hand_written_gradients()
    tree, _ = model_source(impl)
    return None if tree is None else _defines(tree, impl.model.partition(":")[2], "forward_backward")


def model_problem(impl: Implementation) -> str | None:
    """What would fail a model registered by path at once, read without importing it: its module cannot be
    found or read, it has no such class, or the class plainly lacks a required method. Else None."""
    from mlp_lab.model import REQUIRED

    tree, problem = model_source(impl)
    if tree is None:
        return problem
    module, _, name = impl.model.partition(":")
    top = {n for node in tree.body for n in _top_level_names(node)}
    if "*" in top or "__getattr__" in top:  # names that cannot be told from the source
        return None
    if name not in top:
        return f"no class {name} in {module}"
    missing = [m for m in REQUIRED if _defines(tree, name, m) is False]
    return f"model '{impl.model}' lacks {', '.join(missing)}" if missing else None


def _top_level_names(node: ast.stmt) -> list[str]:
    """The names a module-level statement binds (``*`` for a star import); those under ``if``/``try`` too."""
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(node, ast.Match):
        return [n for case in node.cases for item in case.body for n in _top_level_names(item)]
    if isinstance(node, (ast.If, ast.Try, ast.TryStar, ast.With, ast.For, ast.While)):
        body = [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
        body += [item for handler in getattr(node, "handlers", []) for item in handler.body]
        return [n for item in body for n in _top_level_names(item)]
    return []


def _mlp_lab_model_names(tree: ast.Module) -> set[str]:
    """The names this module binds to mlp-lab's ``Model`` (``from mlp_lab import Model``, ``as Base``)."""
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module in ("mlp_lab", "mlp_lab.model")
        for alias in node.names
        if alias.name == "Model"
    }


def _defines(tree: ast.Module, class_name: str, method: str) -> bool | None:
    """Whether class ``class_name`` of the module ``tree`` defines ``method``, itself or through a base class
    defined beside it; False when its bases lead to ``Model`` with none of them defining it; None when that
    cannot be told (a base imported from elsewhere)."""
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    ours = _mlp_lab_model_names(tree)

    def is_mlp_lab_model(base: ast.expr) -> bool:  # Model as imported from mlp_lab, or mlp_lab.Model
        if isinstance(base, ast.Attribute):
            return base.attr == "Model" and isinstance(base.value, ast.Name) and base.value.id == "mlp_lab"
        return isinstance(base, ast.Name) and base.id in ours

    def defines(name: str, seen: frozenset[str]) -> bool | None:
        node = classes.get(name)
        if node is None or name in seen:
            return None
        if any(defined == method for item in node.body for defined in _defined(item)):
            return True
        answers = []
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in classes and base.id != name:  # one of this module's
                answers.append(defines(base.id, seen | {name}))
            else:  # imported: mlp_lab's Model, or a class that cannot be read from here
                answers.append(False if is_mlp_lab_model(base) else None)
        if True in answers:
            return True
        return False if answers and all(a is False for a in answers) else None

    return defines(class_name, frozenset())


def _defined(item: ast.stmt) -> list[str]:
    """The names a statement of a class body defines: a method, or an attribute assigned."""
    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return [item.name]
    if isinstance(item, ast.Assign):
        return [t.id for t in item.targets if isinstance(t, ast.Name)]
    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
        return [item.target.id]
    return []


def _kind(option: dict[str, Any]) -> str:
    """``float, >0`` or ``int, >=1, <=10`` or ``str, a|b``."""
    parts = [option["type"]]
    if "choices" in option:
        parts.append("|".join(map(str, option["choices"])))
    parts += [f"{sign}{option[key]:g}" for key, sign in BOUNDS if key in option]
    return ", ".join(parts)


def _defaults(defaults: dict[str, Any]) -> str:
    shown = {**defaults, "batch_size": defaults["batch_size"] or "full", "eval_every": defaults["eval_every"] or "steps//100"}
    return "  ".join(f"{k}={shown[k]}" for k in ("steps", "lr", "hidden", "batch_size", "eval_every"))


def print_listing(listing: dict[str, Any]) -> None:
    """One block per implementation (a heading, then labelled lines that wrap as whole words), then problems."""
    from rich.console import Console, Group
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    console = Console(file=sys.stdout, highlight=False)
    for impl in listing["implementations"]:
        head = Text.assemble((impl["name"], "bold cyan"), "  ", (f"{impl['distribution']} {impl['version']}", "green"))
        if impl["builtin"]:
            head.append("  built-in", "dim")
        if impl["hand_written_gradients"]:
            head.append("  hand-written gradients", "dim")
        rows = Table.grid(padding=(0, 2))
        rows.add_column(style="dim", no_wrap=True)
        rows.add_column(overflow="fold")
        rows.add_row("from", Text(f"entry point '{impl['plugin']}' in {impl['location']}"))
        if impl["model_problem"]:  # its runs would fail at once: said here, where the plugin is looked at
            rows.add_row(Text("model", style="red"), Text(impl["model_problem"], style="red"))
        rows.add_row("defaults", Text(_defaults(impl["defaults"])))
        if impl["options"]:
            options = Table.grid(padding=(0, 2))
            options.add_column(no_wrap=True)
            options.add_column(no_wrap=True, style="dim")
            options.add_column(ratio=1)
            for o in impl["options"]:
                options.add_row(f"-p {o['name']}={o['default']}", _kind(o), o["help"])
            rows.add_row("options", options)
        console.print(head)
        console.print(Padding(Group(Text(impl["description"]), rows), (0, 0, 1, 2)))
    unmatched = listing["load_filter_unmatched"]
    if unmatched:
        names, quoted = ", ".join(unmatched_in_load_filter()[1]), ", ".join(repr(n) for n in unmatched)
        console.print(f"MLP_LAB_LOAD_PLUGINS names {quoted}, which no installed package has (there are: {names}).", style="red")
    if not listing["implementations"]:
        why = " (MLP_LAB_LOAD_PLUGINS loads only those it names)" if listing["load_filter"] is not None else ""
        console.print(f"No implementations found{why}.\n")
    for title, style, problems in (
        ("Name clashes", "yellow", listing["clashes"]),
        ("Broken plugins (their implementations are not available)", "red", listing["broken"]),
    ):
        if not problems:
            continue
        console.print(Text(title, style=f"bold {style}"))
        for p in problems:
            who = Text.assemble("  ", (f"plugin '{p['plugin']}'", style), f" ({p['distribution']} {p['version']})")
            if p.get("implementation"):
                who.append(f", implementation '{p['implementation']}'")
            console.print(who)
            console.print(Padding(Text(p["error"]), (0, 0, 0, 4), expand=False))
    n, broken = len(listing["implementations"]), len(listing["broken"])
    dists = len({i["distribution"] for i in listing["implementations"]})
    summary = f"{n} implementation{'s' * (n != 1)} from {dists} distribution{'s' * (dists != 1)}"
    console.print(summary + (f"; {broken} problem{'s' * (broken != 1)} (see above)" if broken else "") + ".", style="dim")
