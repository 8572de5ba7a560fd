"""Finding implementations: the plugin manager, entry points, and what each plugin registered.

Every plugin, the built-in ones too, is an entry point in the group ``mlp_lab``. Each is loaded
and asked for its implementations on its own, so one that fails to import, raises in its hook
or breaks the contract is reported (by entry point and distribution, with the error) and the
others still work. Built-in plugins load first. A name that is already taken stays with its
first owner; the later one is registered under ``DISTRIBUTION:NAME`` and the clash is reported.

``MLP_LAB_LOAD_PLUGINS=a,b`` loads only those entry points (``DIST:a``: only distribution DIST's ``a``; empty: none);
``MLP_LAB_TRACE_PLUGINS=1`` prints every hook call and its result to stderr.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
import re
import shlex
import sys
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any, Protocol

import pluggy

from mlp_lab import hookspecs
from mlp_lab.errors import PluginError, UsageError, described
from mlp_lab.model import REQUIRED
from mlp_lab.options import RUN_PARAMS, SHARED, Hyperparams, Option, resolve

GROUP = "mlp_lab"
BUILTIN_DISTRIBUTION = "mlp-lab"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
OPTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")  # set as -p NAME=VALUE, logged as an MLflow param


class Register(Protocol):
    """The callback a plugin's ``register_implementations`` hook receives."""

    def __call__(
        self,
        name: str,
        description: str,
        model: type | str,
        defaults: dict[str, Any] | None = None,
        options: tuple[Option, ...] | list[Option] = (),
    ) -> None: ...


@dataclass
class Implementation:
    """One registered implementation and where it came from."""

    name: str
    description: str
    model: type | str
    defaults: dict[str, Any]
    options: tuple[Option, ...]
    plugin: str
    distribution: str
    version: str
    location: str

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION

    def all_options(self) -> dict[str, Option]:
        """The shared hyperparameters with this implementation's defaults, then its own options as declared."""
        return {
            **{o.name: replace(o, default=self.defaults.get(o.name, o.default)) for o in SHARED},
            **{o.name: o for o in self.options},
        }

    def default(self, name: str) -> Any:
        """What a run of this implementation takes for hyperparameter ``name`` unless told otherwise."""
        return self.defaults[name] if name in self.defaults else self.all_options()[name].default

    def hyperparams(self, overrides: dict[str, Any]) -> Hyperparams:
        """The run's hyperparameters: defaults overridden by ``overrides`` (unknown keys ignored).

        An implementation's own ``eval_every`` is scaled down for ``steps`` fewer than its default, set without
        ``eval_every``, so that a shorter run is evaluated as many times as a default one (``steps // 100`` does so
        by itself); a longer run keeps it (600 steps may be an epoch).
        """
        own, default_steps = self.defaults.get("eval_every"), self.default("steps")
        if own is not None and "steps" in overrides and overrides.get("eval_every") is None and default_steps:
            steps = resolve(self.all_options(), self.defaults, {"steps": overrides["steps"]}, self.name).steps
            overrides = {**overrides, "eval_every": min(own, max(1, round(own * steps / default_steps)))}
        return resolve(self.all_options(), self.defaults, overrides, self.name)

    def model_class(self) -> type:
        """The model class, imported now if it was registered by path; checked against the contract."""
        model = self.model
        if isinstance(model, str):
            module_name, _, attr = model.partition(":")
            try:
                model = getattr(importlib.import_module(module_name), attr)
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
                raise PluginError(f"{self.label}: cannot import model {self.model!r}: {described(exc)}") from exc
        missing = contract_gaps(model)
        if missing:
            raise PluginError(f"{self.label}: model {getattr(model, '__name__', model)!r} lacks {', '.join(missing)}")
        return model

    @property
    def label(self) -> str:
        return f"implementation '{self.name}' (plugin '{self.plugin}' from {self.distribution} {self.version})"


@dataclass
class Problem:
    """A plugin, or one of its registrations, that could not be used (``implementation`` names the latter)."""

    plugin: str
    distribution: str
    version: str
    error: str
    implementation: str | None = None
    dropped: list[str] = field(default_factory=list)  # what the plugin had registered before it broke


@dataclass
class Registry:
    """The implementations found, by name, and the problems met while finding them."""

    implementations: dict[str, Implementation] = field(default_factory=dict)
    broken: list[Problem] = field(default_factory=list)
    clashes: list[Problem] = field(default_factory=list)

    def get(self, name: str) -> Implementation:
        """The implementation called ``name``; a :class:`UsageError` naming the known ones if none."""
        if name in self.implementations:
            return self.implementations[name]
        for problem in self.broken:
            if name in (problem.plugin, problem.implementation, *problem.dropped):
                who = f"plugin '{problem.plugin}' ({problem.distribution} {problem.version})"
                raise UsageError(f"{who} is broken: {problem.error}")
        known = ", ".join(sorted(self.implementations)) or "none"
        hint = f"; {len(self.broken)} plugin problem(s), see 'mlp-lab plugins'" if self.broken else ""
        if os.path.isfile(os.path.join(name, "pyproject.toml")):  # 'mlp-lab new-plugin NAME' wrote it here
            hint += f"; ./{name} is a package, not installed here: {shlex.quote(sys.executable)} -m pip install -e "
            hint += shlex.quote(f"./{name}")
        wanted = load_filter()
        if wanted is not None:
            only = os.environ["MLP_LAB_LOAD_PLUGINS"]
            hint += f"; MLP_LAB_LOAD_PLUGINS={only!r} loads " + ("only those entry points" if wanted else "none")
            unmatched, names = unmatched_in_load_filter()
            if unmatched:
                hint += f", and no installed package has {', '.join(map(repr, unmatched))} (there are: {', '.join(names)})"
        raise UsageError(f"unknown plugin '{name}'; known: {known}{hint}")

    def names(self) -> list[str]:
        return list(self.implementations)

    def contested(self, name: str) -> str | None:
        """When another package also registers ``name`` (or the name ``DIST:NAME`` stands for), which runs
        under each name: the clash said in one line; else None."""
        impl = self.implementations.get(name)
        base = name.split(":", 1)[1] if ":" in name and impl is not None and name.startswith(f"{impl.distribution}:") else name
        rivals = [c for c in self.clashes if c.implementation == base]
        if not rivals or base not in self.implementations:
            return None
        owner = self.implementations[base]
        others = ", ".join(f"{c.distribution} {c.version}'s runs as '{c.distribution}:{base}'" for c in rivals)
        return f"two packages register '{base}': {owner.distribution} {owner.version}'s runs as '{base}', {others}"


def contract_gaps(model: Any) -> list[str]:
    """The required methods ``model`` does not provide (empty when it keeps the contract)."""
    from mlp_lab.model import Model

    if not isinstance(model, type):
        return ["a class (got a " + type(model).__name__ + ")"]
    return [m for m in REQUIRED if getattr(model, m, None) in (None, getattr(Model, m))]


def _distribution(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    return (dist.metadata["Name"], dist.version) if dist is not None else ("unknown", "")


def _entry_points() -> list[metadata.EntryPoint]:
    eps = list(metadata.entry_points(group=GROUP))
    wanted = load_filter()
    if wanted is not None:
        eps = [ep for ep in eps if ep.name in wanted or f"{_distribution(ep)[0]}:{ep.name}" in wanted]
    # Built-in plugins first, then the others in a stable order.
    return sorted(eps, key=lambda ep: (_distribution(ep)[0] != BUILTIN_DISTRIBUTION, ep.name, _distribution(ep)[0]))


def load_filter() -> list[str] | None:
    """The entry points ``MLP_LAB_LOAD_PLUGINS`` names (``NAME`` or ``DIST:NAME``); None when it is not set."""
    only = os.environ.get("MLP_LAB_LOAD_PLUGINS")
    return None if only is None else [n.strip() for n in only.split(",") if n.strip()]


def unmatched_in_load_filter() -> tuple[list[str], list[str]]:
    """The names in ``MLP_LAB_LOAD_PLUGINS`` that no installed entry point has (a typo), and the names there are."""
    eps = list(metadata.entry_points(group=GROUP))
    names = {ep.name for ep in eps} | {f"{_distribution(ep)[0]}:{ep.name}" for ep in eps}
    unmatched = [n for n in load_filter() or [] if n not in names]
    return unmatched, sorted({ep.name for ep in eps})


def _tracing() -> bool:
    """Whether ``MLP_LAB_TRACE_PLUGINS`` asks for tracing (``1``, ``yes``, ...; not empty, ``0``, ``no``, ``off``, ``false``)."""
    return os.environ.get("MLP_LAB_TRACE_PLUGINS", "").strip().lower() not in ("", "0", "no", "off", "false")


def _trace(message: str) -> None:
    if _tracing():
        sys.stderr.write("".join(f"[mlp-lab trace] {line}\n" for line in message.rstrip("\n").splitlines()))


def plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with mlp-lab's hook specifications (and pluggy's call tracing when asked for)."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if _tracing():
        pm.trace.root.setwriter(_trace)  # each hook call with its arguments, then "finish ... --> result"
        pm.enable_tracing()
    return pm


def near_misses() -> list[metadata.EntryPoint]:
    """Entry points in a group named almost ``mlp_lab`` (``mlp_lab.plugins``, ``mlp-lab``): plugins declared
    where mlp-lab does not look."""

    near = re.compile(r"mlp[-_.]?lab($|[-_.])")  # mlp-lab, mlplab, mlp_lab.plugins; not mlp_labels
    groups = [g for g in metadata.entry_points().groups if g != GROUP and near.match(g.lower())]
    return [ep for group in sorted(groups) for ep in metadata.entry_points(group=group)]


def load(entry_points: list[metadata.EntryPoint] | None = None) -> Registry:
    """Load every plugin of the ``mlp_lab`` entry-point group into a new :class:`Registry`."""
    registry = Registry()
    wanted = load_filter()
    if entry_points is None:
        for ep in near_misses():
            dist, version = _distribution(ep)
            if wanted is not None and ep.name not in wanted and f"{dist}:{ep.name}" not in wanted:
                continue
            error = f"declares its entry point {ep.name} in group '{ep.group}'; mlp-lab reads group '{GROUP}'"
            registry.broken.append(Problem(ep.name, dist, version, error))
    pm = plugin_manager()
    for ep in _entry_points() if entry_points is None else entry_points:
        dist, version = _distribution(ep)

        def problem(error: str, ep: metadata.EntryPoint = ep, dist: str = dist, version: str = version) -> Problem:
            registry.broken.append(Problem(ep.name, dist, version, error))
            _trace(f"plugin '{ep.name}' ({dist} {version}) broken: {error}")
            return registry.broken[-1]

        _trace(f"loading entry point {ep.name} = {ep.value} ({dist} {version})")
        try:
            with contextlib.redirect_stdout(sys.stderr):  # a chatty plugin must not spoil --json output
                module = ep.load()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever a plugin's import raises
            problem(f"failed to import {ep.value}: {type(exc).__name__}: {exc}")
            continue
        if inspect.isroutine(module):
            where = ep.value.partition(":")[0]
            problem(f"its entry point names a function ({ep.value}); name the module that holds the hook: {where!r}")
            continue
        if pm.is_registered(module):
            problem(f"its module {ep.value} is already loaded as plugin '{pm.get_name(module)}'")
            continue
        try:  # entry-point names are unique within a distribution, not across them
            pm.register(module, name=ep.name if pm.get_plugin(ep.name) is None else f"{dist}:{ep.name}")
        except Exception as exc:  # noqa: BLE001
            problem(f"cannot be registered: {type(exc).__name__}: {exc}")
            continue
        unknown = [c.name for c in pm.get_hookcallers(module) or [] if c.spec is None]
        if unknown or not pm.get_hookcallers(module):
            pm.unregister(module)
            problem(
                f"defines unknown hook(s) {', '.join(unknown)}"
                if unknown
                else "implements no mlp-lab hook (is register_implementations decorated with @mlp_lab.hookimpl?)"
            )
            continue
        register_plugin(pm, module, ep.name, dist, version, registry, problem)
    return registry


class Registration:
    """The ``register`` callback handed to one plugin's hook: checks each registration and keeps it pending."""

    def __init__(self, plugin: str, dist: str, version: str, location: str) -> None:
        self.plugin, self.dist, self.version, self.location = plugin, dist, version, location
        self.pending: list[Implementation] = []
        self.rejected: list[Problem] = []

    def __repr__(self) -> str:
        return f"<register for plugin '{self.plugin}' ({self.dist} {self.version})>"

    def __call__(self, name, description, model, defaults=None, options=()) -> None:  # noqa: ANN001
        """Check one registration; a bad one is recorded as a problem and the plugin's others still count."""
        try:
            self.pending.append(self.check(name, description, model, defaults, options))
        except (PluginError, UsageError) as exc:
            self.rejected.append(Problem(self.plugin, self.dist, self.version, str(exc), str(name)))
        except Exception as exc:  # noqa: BLE001 - a check tripped on a value of an unexpected kind: this one is rejected
            error = f"implementation '{name}': {described(exc)}"
            self.rejected.append(Problem(self.plugin, self.dist, self.version, error, str(name)))

    def check(self, name, description, model, defaults, options) -> Implementation:  # noqa: ANN001
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise PluginError(f"invalid implementation name {name!r}")
        if name == "all":
            raise PluginError("the implementation name 'all' is taken by --plugin all, which runs every implementation")
        if not isinstance(description, str) or not description.strip() or "\n" in description.strip():
            raise PluginError(f"implementation '{name}' needs a one-line description, got {description!r}")
        if not isinstance(model, str):
            gaps = contract_gaps(model)
            if gaps:
                raise PluginError(f"implementation '{name}': model lacks {', '.join(gaps)}")
        elif ":" not in model:
            raise PluginError(f"implementation '{name}': model path {model!r} must look like 'package.module:Class'")
        if defaults is not None and not isinstance(defaults, dict):
            raise PluginError(f"implementation '{name}': defaults must be a dict, got {type(defaults).__name__}")
        opts = tuple(options)
        shared = {o.name for o in SHARED}
        seen: set[str] = set()
        for o in opts:
            if not isinstance(o, Option):
                raise PluginError(f"implementation '{name}': options must be mlp_lab.Option, got {o!r}")
            if not isinstance(o.name, str) or not OPTION_RE.match(o.name) or o.name.startswith("__"):
                raise PluginError(
                    f"implementation '{name}': invalid option name {o.name!r} (a letter or _ first, then letters, digits, _ . -)"
                )
            if not callable(o.type) or not isinstance(getattr(o.type, "__name__", None), str):  # listed by its name
                raise PluginError(f"implementation '{name}': option '{o.name}' needs a type such as float, got {o.type!r}")
            if o.name in Hyperparams.RESERVED:
                raise PluginError(f"implementation '{name}': option '{o.name}' would hide hp.{o.name} of mlp_lab.Hyperparams")
            if o.name in shared:
                raise PluginError(f"implementation '{name}': option '{o.name}' is shared; set it in defaults")
            if o.name in RUN_PARAMS:
                raise PluginError(f"implementation '{name}': option '{o.name}' would clash with the run parameter of that name")
            if o.name in seen:
                raise PluginError(f"implementation '{name}': option '{o.name}' is declared twice")
            seen.add(o.name)
        opts = tuple(replace(o, default=_check_default(o, o.default, name)) for o in opts)
        unknown = set(defaults or {}) - shared - {o.name for o in opts}
        if unknown:
            raise PluginError(f"implementation '{name}': defaults for unknown hyperparameters {sorted(unknown)}")
        declared = {o.name: o for o in (*SHARED, *opts)}
        defaults = {key: _check_default(declared[key], value, name) for key, value in (defaults or {}).items()}
        where = (self.plugin, self.dist, self.version, self.location)
        return Implementation(name, description.strip(), model, defaults, opts, *where)


def _check_default(option: Option, value: Any, owner: str) -> Any:
    """A default must pass its option's checks, and a number must not lose part of itself (2.7 for an int runs as 2).

    Returns the default to keep: a number or flag as it runs (``"0.9"`` for a float is 0.9, ``200.0`` for an int
    200), so that the listing and the logged params show it so; a value of another type as given."""
    try:
        parsed = option.parse(value)
    except UsageError as exc:
        raise PluginError(f"implementation '{owner}': default {option.name}={value!r}: {exc}") from None
    numbers = (int, float)
    if isinstance(value, numbers) and isinstance(parsed, numbers) and not isinstance(value, bool) and parsed != value:
        raise PluginError(
            f"implementation '{owner}': default {option.name}={value!r} would run as {parsed!r} ({option.type.__name__})"
        )
    return parsed if option.type in (int, float, bool) else value


def register_plugin(pm, module, plugin: str, dist: str, version: str, registry: Registry, problem) -> None:  # noqa: ANN001
    """Ask one plugin for its implementations; if its hook raises, keep none of them."""
    register = Registration(plugin, dist, version, getattr(module, "__file__", None) or repr(module))
    others = [p for p in pm.get_plugins() if p is not module]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            returned = pm.subset_hook_caller("register_implementations", remove_plugins=others)(register=register)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever a plugin's hook raises
        problem(f"raised during registration: {type(exc).__name__}: {exc}").dropped = [i.name for i in register.pending]
        pm.unregister(module)
        return
    for rejected in register.rejected:
        registry.broken.append(rejected)
        _trace(f"plugin '{plugin}' ({dist} {version}) rejected {rejected.error}")
    if not register.pending and not register.rejected:
        hint = " (register_implementations returned a value: call register(...) instead)" if any(returned) else ""
        problem(f"registered no implementation{hint}")
        return
    for impl in register.pending:
        if impl.name in registry.implementations:
            owner = registry.implementations[impl.name]
            if (owner.plugin, owner.distribution) == (plugin, dist):
                registry.broken.append(Problem(plugin, dist, version, f"registers '{impl.name}' twice", impl.name))
                continue
            qualified = f"{dist}:{impl.name}"
            if qualified in registry.implementations:
                registry.broken.append(Problem(plugin, dist, version, f"registers '{impl.name}' twice", impl.name))
                continue
            taken = f"name '{impl.name}' is taken by {owner.distribution}; registered as '{qualified}'"
            registry.clashes.append(Problem(plugin, dist, version, taken, impl.name))
            impl.name = qualified
        registry.implementations[impl.name] = impl
        _trace(f"registered '{impl.name}' from plugin '{plugin}' ({dist} {version})")


@functools.cache
def get_registry() -> Registry:
    """The registry of this process, loaded on first use."""
    return load()


def check_overrides(impls: list[Implementation], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` by option name: each must name a hyperparameter of at least one of ``impls`` (as typed, else
    with ``-`` read as ``_``: ``batch-size``), with a valid value for each."""
    known = {o for impl in impls for o in impl.all_options()}
    named = {}
    for key, value in overrides.items():
        name = key if key in known else key.replace("-", "_")
        if name not in known:
            names = ", ".join(i.name for i in impls)
            raise UsageError(f"unknown parameter '{key}' for {names}; known: {', '.join(sorted(known))}")
        named[name] = value
    for impl in impls:
        impl.hyperparams(named)
    return named
