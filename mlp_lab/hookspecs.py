"""The hooks a plugin implements: the whole plugin contract with mlp-lab's core."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from mlp_lab.registry import Register

hookspec = pluggy.HookspecMarker("mlp_lab")
hookimpl = pluggy.HookimplMarker("mlp_lab")


@hookspec
def register_implementations(register: Register) -> None:
    """Register the plugin's implementations by calling ``register`` once for each.

    ``register(name, description, model, defaults=None, options=())``:

    - ``name``: what users type after ``--plugin`` (letters, digits, ``-`` and ``_``).
    - ``description``: one line; say what it changes and relative to which implementation.
    - ``model``: a :class:`mlp_lab.Model` subclass, or its import path ``"package.module:Class"``
      (the path is imported only when the implementation runs, which keeps ``mlp-lab plugins``
      fast when the module imports torch).
    - ``defaults``: values for the shared hyperparameters (``steps``, ``lr``, ``hidden``,
      ``batch_size``, ``eval_every``) where the implementation's differ from the core's.
    - ``options``: :class:`mlp_lab.Option` declarations of the implementation's own
      hyperparameters, set with ``-p NAME=VALUE`` and logged as params.
    """
