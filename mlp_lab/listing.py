"""``mlp-lab plugins``: what was found, from where, with which options; and what is broken."""

from __future__ import annotations

import sys
from typing import Any

from mlp_lab.registry import get_registry


def plugin_listing() -> dict[str, Any]:
    """Implementations, broken plugins and name clashes, as plain data (the ``--json`` output)."""
    registry = get_registry()
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
                "hand_written_gradients": None if isinstance(impl.model, str) else impl.model.has_hand_written_gradients(),
                "defaults": {name: opt.default for name, opt in impl.all_options().items()},
                "options": [
                    {
                        "name": o.name,
                        "type": o.type.__name__,
                        "default": o.default,
                        "help": o.help,
                        **{k: getattr(o, k) for k in ("min", "max", "above", "below", "choices") if getattr(o, k) is not None},
                    }
                    for o in impl.options
                ],
            }
            for impl in registry.implementations.values()
        ],
        "broken": [vars(p) for p in registry.broken],
        "clashes": [vars(p) for p in registry.clashes],
    }


def print_listing(listing: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    table = Table(title="Implementations", title_justify="left", show_lines=True)
    for col in ("name", "description", "from", "defaults and options"):
        table.add_column(col, overflow="fold")
    for impl in listing["implementations"]:
        shared = ", ".join(f"{k}={impl['defaults'][k]}" for k in ("steps", "lr", "hidden", "batch_size"))
        own = "\n".join(f"-p {o['name']}={o['default']} ({o['type']}) {o['help']}" for o in impl["options"])
        where = f"{impl['distribution']} {impl['version']}\n[dim]{impl['plugin']}: {impl['location']}[/dim]"
        table.add_row(impl["name"], impl["description"], where, shared + ("\n" + own if own else ""))
    console.print(table)
    if not listing["implementations"]:
        console.print("No implementations found (is MLP_LAB_LOAD_PLUGINS set?).")
    for clash in listing["clashes"]:
        console.print(
            f"[yellow]Name clash[/yellow]: plugin '{clash['plugin']}' "
            f"({clash['distribution']} {clash['version']}): {clash['error']}"
        )
    for broken in listing["broken"]:
        console.print(
            f"[red]Broken plugin[/red] '{broken['plugin']}' ({broken['distribution']} {broken['version']}): {broken['error']}",
            markup=True,
            highlight=False,
        )
