"""Hyperparameters: the shared ones every implementation takes, and the options a plugin declares."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mlp_lab.errors import UsageError


@dataclass(frozen=True)
class Option:
    """A hyperparameter: its name, type, default, allowed range and one line of help."""

    name: str
    type: type
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[Any, ...] | None = None
    unset: str | None = None  # the word that asks for None, what the option means when unset ("full" for batch_size)

    def parse(self, value: Any, owner: str = "") -> Any:
        """``value`` (a string from the command line, or a Python value) converted and checked."""
        where = f"{owner}: " if owner else ""
        if value is None and self.default is None:
            return None
        if self.unset is not None and isinstance(value, str) and value.strip().lower() == self.unset:
            return None
        try:
            if self.type is bool and isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                converted = value.lower() in ("1", "true", "yes", "on")
            else:
                converted = self.type(value)
        except (TypeError, ValueError):
            kind = self.type.__name__ + (f" or {self.unset!r}" if self.unset else "")
            raise UsageError(f"{where}{self.name} must be {kind}, got {value!r}") from None
        if self.type is float and not math.isfinite(converted):
            raise UsageError(f"{where}{self.name} must be a finite number, got {value!r}")
        if self.choices is not None and converted not in self.choices:
            raise UsageError(f"{where}{self.name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if self.min is not None and converted < self.min:
            raise UsageError(f"{where}{self.name} must be >= {self.min}, got {value!r}")
        if self.max is not None and converted > self.max:
            raise UsageError(f"{where}{self.name} must be <= {self.max}, got {value!r}")
        if self.above is not None and converted <= self.above:
            raise UsageError(f"{where}{self.name} must be > {self.above}, got {value!r}")
        if self.below is not None and converted >= self.below:
            raise UsageError(f"{where}{self.name} must be < {self.below}, got {value!r}")
        return converted

    def describe(self) -> str:
        """``name=default (type, range): help`` for listings."""
        bounds = []
        if self.choices is not None:
            bounds.append("|".join(map(str, self.choices)))
        low = f">={self.min}" if self.min is not None else f">{self.above}" if self.above is not None else ""
        high = f"<={self.max}" if self.max is not None else f"<{self.below}" if self.below is not None else ""
        bounds += [b for b in (low, high) if b]
        kind = ", ".join([self.type.__name__, *bounds])
        return f"{self.name}={self.default} ({kind})" + (f": {self.help}" if self.help else "")


# The shared hyperparameters: every implementation gets them, the core uses steps, batch_size and
# eval_every, and an implementation's defaults may override any default here.
SHARED = (
    Option("steps", int, 10000, "training steps", min=1, max=10**8),
    Option("lr", float, 0.1, "learning rate", above=0.0),
    Option("hidden", int, 50, "hidden units per layer", min=1),
    Option("batch_size", int, None, "samples per step (default: full, the whole training set)", min=1, unset="full"),
    Option("eval_every", int, None, "steps between evaluations (default: steps // 100)", min=1),
)


# What the core logs beside the hyperparameters of every run (see mlp_lab.runs): no option may take these names.
RUN_PARAMS = frozenset(
    {
        "plugin",
        "plugin_distribution",
        "plugin_version",
        "seed",
        "device",
        "compile",
        "dataset",
        "n_train",
        "n_test",
        "dataset_digest",
        "mlp_lab_version",
        "torch_version",
        "device_name",
        "device_memory_gb",
        "cpu_threads",
    }
)


@dataclass(frozen=True)
class Hyperparams:
    """The resolved hyperparameters of one run, read as attributes (``hp.lr``, ``hp.dropout``)."""

    values: dict[str, Any] = field(default_factory=dict)
    RESERVED: ClassVar[frozenset[str]] = frozenset({"values", "as_dict"})  # attributes, not hyperparameters

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "values":  # copy and pickle probe before __init__
            raise AttributeError(name)
        try:
            return self.values[name]
        except KeyError:
            known = ", ".join(sorted(self.values))
            raise AttributeError(f"no hyperparameter {name!r} (there are {known})", name=name, obj=self) from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


def default_eval_every(steps: int) -> int:
    """Steps between evaluations when neither the user nor the implementation says: a hundredth of the run."""
    return max(1, steps // 100)


def as_logged(options: dict[str, Option], hp: Hyperparams) -> dict[str, Any]:
    """The values as a run logs them: an unset option that has a word for it (``batch_size``: "full") as
    that word, which ``-p`` reads back, rather than None, which MLflow would keep as the text "None"."""
    return {
        name: options[name].unset if value is None and name in options and options[name].unset else value
        for name, value in hp.values.items()
    }


def read_back(params: dict[str, str]) -> dict[str, str]:
    """An mlp-lab run's params as today's runs log them: older ones logged an unset batch size as "None"
    (now "full") and, before that, the default evaluation interval as "None" (it was steps // 100)."""
    out = dict(params)
    for option in SHARED:
        if option.unset and out.get(option.name) == "None":
            out[option.name] = option.unset
    if out.get("eval_every") == "None" and out.get("steps", "").isdigit():
        out["eval_every"] = str(default_eval_every(int(out["steps"])))
    return out


def resolve(options: dict[str, Option], defaults: dict[str, Any], overrides: dict[str, Any], owner: str) -> Hyperparams:
    """Defaults, then the implementation's defaults, then the user's overrides, each value checked."""
    values = {}
    for name, option in options.items():
        value = overrides.get(name, defaults.get(name, option.default))
        values[name] = option.parse(value, owner)
    return Hyperparams(values)
