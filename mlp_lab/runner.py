"""``mlp-lab run``: check everything, then train each (implementation, seed) as a tracked run.

One run alone is a plain MLflow run. Several (more than one implementation or seed) form a
comparison group: a parent run that records the implementations, seeds and shared settings,
with one child run per pair; a failing child does not stop the others.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mlp_lab import output
from mlp_lab.errors import UsageError
from mlp_lab.registry import Implementation, check_overrides, get_registry


def select(names: tuple[str, ...]) -> list[Implementation]:
    """The implementations named (``all``: every registered one), each once, in the order given."""
    registry = get_registry()
    chosen: list[Implementation] = []
    for name in names:
        for impl in registry.implementations.values() if name == "all" else [registry.get(name)]:
            if impl not in chosen:
                chosen.append(impl)
    left = [p.implementation or p.plugin for p in registry.broken if p.implementation not in registry.implementations]
    if "all" in names and left:  # what 'all' leaves out is said, not dropped in silence
        print(
            f"Note: --plugin all leaves out what is broken: {', '.join(dict.fromkeys(left))} (see 'mlp-lab plugins')",
            file=sys.stderr,
        )
    if not chosen:
        raise UsageError("no implementations to run (none registered; see 'mlp-lab plugins')")
    if "all" not in names:  # a name another package also claims: say whose runs
        for clash in dict.fromkeys(registry.contested(impl.name) for impl in chosen):
            if clash:
                print(f"Note: {clash}", file=sys.stderr)
    return chosen


def note_options_some_lack(impls: list[Implementation], overrides: dict[str, Any]) -> None:
    """Say which of the implementations run have no option a ``-p`` sets (it is theirs only if some have it)."""
    for name in overrides:
        lacking = [impl.name for impl in impls if name not in impl.all_options()]
        if lacking:
            have, run = ("has", "runs") if len(lacking) == 1 else ("have", "run")
            print(f"Note: {', '.join(lacking)} {have} no option {name}, so {run} without it", file=sys.stderr)


def model_class_or_failure(impl: Implementation) -> Any:
    """The model class; if it cannot be imported or breaks the contract, a stand-in whose runs end FAILED with the reason."""
    from mlp_lab.errors import PluginError
    from mlp_lab.runs import UnusableModel

    try:
        return impl.model_class()
    except PluginError as exc:
        return UnusableModel(exc)


def refuse_bad_combination(impl: Implementation, model_class: Any, hp: Any) -> Any:
    """A combination of options the model refuses (:meth:`~mlp_lab.Model.check_hyperparams`) as a usage error,
    before any run starts. If the check itself breaks, a stand-in whose runs end FAILED with the reason."""
    from mlp_lab.errors import PluginError, described
    from mlp_lab.model import refusal
    from mlp_lab.runs import UnusableModel

    try:
        why = refusal(model_class, hp)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the plugin's own check is broken: its runs say so, the others go on
        error = PluginError(f"{impl.label} failed: check_hyperparams raised {described(exc)}")
        error.__cause__ = exc  # its traceback goes into the run's error.txt
        return UnusableModel(error)
    if why:
        raise UsageError(f"{impl.name}: {why}")
    return model_class


def data_size(tiny: bool, full: bool) -> str:
    if tiny and full:
        raise UsageError("--tiny and --full exclude each other")
    return "tiny" if tiny else "full" if full else "default"


def run_command(
    plugins: tuple[str, ...],
    overrides: dict[str, Any],
    seed_list: list[int],
    tiny: bool,
    full: bool,
    data_dir: Path | None,
    device: str,
    quiet: bool,
    tracking_uri: str | None,
    experiment: str,
    compile_step: bool = False,
    **_: Any,
) -> int:
    """Validate, then train and log every run; the exit code is 1 when any run failed."""
    from mlp_lab import tracking_process

    # the tracking process imports MLflow while this one checks the input, imports torch and loads data
    with tracking_process.started() as process:
        impls = select(plugins)
        overrides = check_overrides(impls, overrides)
        note_options_some_lack(impls, overrides)
        size = data_size(tiny, full)
        if data_dir is not None and size != "full":
            raise UsageError("--data-dir is read with --full only (the default and --tiny sets are embedded in mlp-lab)")
        if data_dir is not None and not data_dir.is_dir():
            raise UsageError(f"--data-dir {data_dir}: no such folder")
        from mlp_lab.data import SIZES  # imports torch: after the tracking process has started

        n_train = SIZES[size][0]
        hps = {impl.name: impl.hyperparams(overrides) for impl in impls}
        for name, hp in hps.items():
            if hp.batch_size is not None and hp.batch_size > n_train:
                raise UsageError(f"{name}: batch_size {hp.batch_size} is larger than the training set ({n_train})")
        sparse = [f"{name} ({hp.eval_every} > {hp.steps})" for name, hp in hps.items() if (hp.eval_every or 0) > hp.steps]
        if sparse and overrides.get("eval_every") is not None:  # as asked, but two points are easily taken for a curve
            print(
                f"Note: eval_every is more than steps for {', '.join(sparse)}: evaluated before training and at its end only",
                file=sys.stderr,
            )
        classes = {impl.name: model_class_or_failure(impl) for impl in impls}
        for impl in impls:
            classes[impl.name] = refuse_bad_combination(impl, classes[impl.name], hps[impl.name])
        from mlp_lab.tracking import metrics_interval

        metrics_interval()  # a bad MLP_LAB_METRICS_INTERVAL is a usage error before anything runs

        from mlp_lab import data as data_module
        from mlp_lab import figures
        from mlp_lab.runs import RunSpec, execute, resolve_device

        dev = resolve_device(device)
        if compile_step:
            from mlp_lab.devices import check_compile

            check_compile(dev)
        tracker = open_tracker(process, tracking_uri, experiment)  # opens while the data loads
        data = data_module.load(size, data_dir)
        if process is not None:  # (else the opening thread imports matplotlib: two threads must not import it at once)
            figures.prepare()  # while the tracking process opens the store
        tracker.wait()  # before any training: a store that cannot be used fails now, not once the training is done
        specs = [RunSpec(impl, classes[impl.name], hps[impl.name], seed, compile_step) for impl in impls for seed in seed_list]

        if len(specs) == 1:
            outcomes = [execute(specs[0], data, dev, tracker, quiet=quiet)]
            print_outcomes(outcomes, tracker, None)
        else:
            from mlp_lab import groups

            group, outcomes = groups.execute_group(specs, data, dev, tracker, quiet=quiet)
            print_outcomes(outcomes, tracker, group.run_id)  # (interrupted here, the group ends KILLED when closed)
            comparison = groups.finish(tracker, group, outcomes)  # made by the tracking process, which has MLflow open
            if comparison is not None:
                groups.print_comparison(comparison)
        return 0 if all(o.status == "FINISHED" for o in outcomes) else 1


def open_tracker(process: Any, uri: str | None, experiment: str) -> Any:
    """The MLflow experiment to log to, opened by the tracking process (else in the background here).

    An unreachable or invalid store is a usage error (``StoreError``), raised as soon as it is known.
    """
    from mlp_lab.tracking import Tracker
    from mlp_lab.tracking_process import RemoteTracker

    try:
        return RemoteTracker(process, uri, experiment) if process is not None else Tracker(uri, experiment, background=True)
    except OSError as exc:  # the store's files cannot be reached (the folder cases are StoreErrors already)
        raise UsageError(f"cannot open the MLflow store {uri or '(default)'}: {exc}") from None


def print_outcomes(outcomes: list[Any], tracker: Any, parent: str | None) -> None:
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    table = Table(title="mlp-lab runs", title_justify="left")
    for col in ("plugin", "seed", "status", "train acc", "test acc", "final loss", "train s", "steps/s", "run id"):
        table.add_column(col, justify="right" if col not in ("plugin", "status", "run id") else "left")
    for o in outcomes:
        fmt = lambda key, spec, m=o.metrics: format(m[key], spec) if key in m else "-"  # noqa: E731
        table.add_row(
            o.spec.impl.name,
            str(o.spec.seed),
            o.status,
            fmt("train_accuracy", ".3f"),
            fmt("test_accuracy", ".3f"),
            fmt("final_train_loss", ".4g"),
            fmt("train_time_s", ".1f"),
            fmt("steps_per_s", ".0f"),
            o.run_id,
        )
    probe = Console(width=1000)  # the table's natural width: nothing cut (run ids are copied into other commands)
    needed = Measurement.get(probe, probe.options, table).maximum
    console = output.console(file=sys.stdout, width=max(Console().width, needed))  # a reader gone (| head): it stops
    console.print(table)
    lines = [f"Tracked in {tracker.uri} (experiment id {tracker.experiment_id})."]
    if parent:
        lines.append(f"Comparison group: run {parent}")
    lines.append(f"See them with: {ui_command(tracker.uri)}")
    for line in lines:  # whole lines, as typed: never wrapped, never read as markup
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def ui_command(uri: str) -> str:
    """Where to see the runs in ``uri``: a server's own address, else ``mlp-lab ui`` (naming the store unless default)."""
    import shlex

    from mlp_lab.tracking import DEFAULT_DIR

    if uri.startswith(("http://", "https://")):
        return uri
    default = f"sqlite:///{(DEFAULT_DIR / 'mlflow.db').resolve()}"
    return "mlp-lab ui" if uri == default else f"mlp-lab ui --tracking-uri {shlex.quote(uri)}"
