"""The ``mlp-lab`` command line. Importing this module imports neither torch nor MLflow."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from mlp_lab.errors import PluginError, Terminated, TrackingError, UsageError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class Group(click.Group):
    """Reports every usage error, ours and click's, as one line with exit code 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.Abort as exc:
            if isinstance(exc.__cause__, Terminated):
                click.echo("Terminated.", err=True)
                sys.exit(143)
            click.echo("Aborted.", err=True)
            sys.exit(130)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except (UsageError, PluginError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except TrackingError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(package_name="mlp-lab", prog_name="mlp-lab")
def cli() -> None:
    """Build, check and compare MNIST MLP implementations side by side, tracked in MLflow.

    Implementations are plugins (entry-point group ``mlp_lab``): see ``mlp-lab plugins``.
    Runs go to ./mlruns (SQLite) unless --tracking-uri or MLFLOW_TRACKING_URI say otherwise.
    """


def main() -> None:
    """The ``mlp-lab`` console script.

    After a command that loaded torch (``run``), everything is written and closed, and the process
    ends at once: tearing down torch, MLflow and pandas module by module takes another second.
    """
    try:
        cli(prog_name="mlp-lab")
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    from mlp_lab.output import unless_unread

    for stream in (sys.stdout, sys.stderr):  # a reader gone (| head) is no error of ours: what is left goes nowhere
        with unless_unread(stream):
            stream.flush()
    if "torch" not in sys.modules:
        sys.exit(code)
    if code is not None and not isinstance(code, int):
        with unless_unread(sys.stderr):
            print(code, file=sys.stderr, flush=True)
        code = 1
    os._exit(code or 0)


# -- shared options ------------------------------------------------------------------------------


def experiment_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--experiment``, which MLflow needs to be a name, not blank."""
    if not value.strip():
        raise click.BadParameter("an MLflow experiment needs a name")
    return value


def tracking_options(f: Any) -> Any:
    f = click.option(
        "--experiment", default="mlp-lab", show_default=True, callback=experiment_name, help="MLflow experiment name."
    )(f)
    f = click.option(
        "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow store or server (default: sqlite:///mlruns/mlflow.db)."
    )(f)
    return f


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    """``-p NAME=VALUE`` pairs as a dict (values are converted by each option's type later)."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"-p expects NAME=VALUE, got {pair!r}")
        key = name.strip()  # as typed: an option may be named with '-' (check_overrides reads batch-size as batch_size)
        same = next((k for k in out if k.replace("-", "_") == key.replace("-", "_")), None)
        if same is not None:
            raise UsageError(f"-p {key} is given twice ({out[same]!r} and {value.strip()!r}); give it once")
        out[key] = value.strip()
    return out


MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit integer


def parse_seeds(seed: int | None, seeds: str | None, repeat: int | None) -> list[int]:
    if sum(x is not None for x in (seed, seeds, repeat)) > 1:
        raise UsageError("use only one of --seed, --seeds and --repeat")
    if seeds is not None:
        try:
            out = [int(s) for s in seeds.split(",")]  # an empty item ("1,,2", "1,") is a typo, not a seed
        except ValueError:
            raise UsageError(f"--seeds expects comma-separated integers, got {seeds!r}") from None
        if not out or len(set(out)) != len(out):
            raise UsageError(f"--seeds needs distinct integers, got {seeds!r}")
    elif repeat is not None:
        out = [1337 + i for i in range(repeat)]
    else:
        out = [1337 if seed is None else seed]
    for value in out:
        if not 0 <= value <= MAX_SEED:
            raise UsageError(f"seed {value} is out of range: seeds are 0 to {MAX_SEED} (torch's seed range)")
    return out


# -- run -------------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.option(
    "--plugin", "plugins", multiple=True, required=True, help="Implementation to run (repeatable); 'all' runs every one."
)
@click.option("--steps", type=int, help="Training steps (default: each implementation's; see 'mlp-lab plugins').")
@click.option("--lr", type=float, help="Learning rate (default: each implementation's).")
@click.option("--hidden", type=int, help="Hidden units per layer (default: each implementation's).")
@click.option("--batch-size", help="Samples per step, or 'full': the whole training set (default: each implementation's).")
@click.option(
    "--eval-every",
    type=int,
    help="Steps between evaluations (default: steps // 100, or an implementation's own, less for fewer --steps).",
)
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="An implementation's own option (repeatable).")
@click.option("--seed", type=int, help="Random seed (default 1337, the seed notebook's).")
@click.option("--seeds", help="Comma-separated seeds: one run per plugin and seed, grouped under a parent run.")
@click.option("--repeat", type=click.IntRange(min=1), help="Run each plugin with N seeds (1337, 1338, ...).")
@click.option("--tiny", is_flag=True, help="500 train / 100 test samples.")
@click.option("--full", is_flag=True, help="Full MNIST, 60000 / 10000 (read from the data folder, downloaded if missing).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --full: the folder with the MNIST IDX files (must exist; default: MLP_LAB_DATA_DIR, else the user cache).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--compile", "compile_step", is_flag=True, help="Compile the training step (torch.compile; CUDA graphs on a GPU).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@tracking_options
def run(**kw: Any) -> None:
    """Train implementations on the same data, seeds and budget; log each as an MLflow run."""
    import signal

    from mlp_lab import runner

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, terminate)  # like Ctrl-C: the current run ends KILLED with what it logged

    sys.exit(runner.run_command(**kw, overrides=_overrides(kw), seed_list=parse_seeds(kw["seed"], kw["seeds"], kw["repeat"])))


def _overrides(kw: dict[str, Any]) -> dict[str, Any]:
    shared = {k: kw[k] for k in ("steps", "lr", "hidden", "batch_size", "eval_every") if kw[k] is not None}
    return overrides_of(kw["params"], shared)


def overrides_of(pairs: tuple[str, ...], flags: dict[str, Any]) -> dict[str, Any]:
    """The ``-p`` pairs and the hyperparameters given as their own flags, as one dict; a name set both ways is an error."""
    params = parse_params(pairs)
    for key in (k for k in params if k.replace("-", "_") in flags):  # the first clash as typed
        name = key.replace("-", "_")
        flag = "--" + name.replace("_", "-")
        raise UsageError(f"-p {key}={params[key]} and {flag} {flags[name]} both set {name}; use {flag} alone")
    return {**params, **flags}


# -- plugins ---------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--guide", is_flag=True, help="Show the plugin authors' guide (Markdown) instead.")
def plugins(as_json: bool, guide: bool) -> None:
    """List the implementations found, where they come from, and their options; and broken plugins."""
    if guide:
        from importlib import resources

        text = (resources.files("mlp_lab") / "docs" / "plugins.md").read_text(encoding="utf-8")
        if sys.stdout.isatty():
            click.echo_via_pager(text)
        else:
            click.echo(text, nl=False)
        return
    from mlp_lab.listing import plugin_listing, print_listing

    listing = plugin_listing()
    if as_json:
        click.echo(json.dumps(listing, indent=2))
    else:
        print_listing(listing)


# -- gradcheck -------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.option("--plugin", required=True, help="Implementation to check.")
@click.option(
    "--samples", type=click.IntRange(min=1, max=1000), default=5, show_default=True, help="Training samples in the batch."
)
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option(
    "--entries", type=click.IntRange(min=1), default=20, show_default=True, help="Entries per tensor for finite differences."
)
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="An implementation's own option.")
@click.option("--hidden", type=int, help="Hidden units per layer.")
@click.option(
    "--own-weights",
    is_flag=True,
    help="Check hand-written gradients at the model's own initial weights, not at random ones (std 1/sqrt(size)).",
)
def gradcheck(
    plugin: str, samples: int, seed: int, entries: int, params: tuple[str, ...], hidden: int | None, own_weights: bool
) -> None:
    """Compare hand-written gradients with autograd ("backprop ninja"), or autograd with finite differences."""
    from mlp_lab import gradcheck as check
    from mlp_lab.registry import check_overrides, get_registry

    impl = get_registry().get(plugin)
    overrides = check_overrides([impl], overrides_of(params, {"hidden": hidden} if hidden is not None else {}))
    parse_seeds(seed, None, None)  # the same seed range as run's
    hp = impl.hyperparams(overrides)
    if "batch_size" not in overrides:  # the model is built for the batch it is checked on, where its options allow
        with contextlib.suppress(UsageError):
            hp = impl.hyperparams({**overrides, "batch_size": samples})
    sys.exit(check.run(impl, hp, samples=samples, seed=seed, entries=entries, own_weights=own_weights))


# -- compare ---------------------------------------------------------------------------------------


def store_option(f: Any) -> Any:
    return click.option(
        "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow store or server (default: sqlite:///mlruns/mlflow.db)."
    )(f)


@cli.command(context_settings=CONTEXT)
@click.option("--group", help="A comparison group's run id or name, or 'last' (the default unless --experiment is given).")
@click.option(
    "--experiment", "experiments", multiple=True, help="Compare every run of this experiment (repeatable: across experiments)."
)
@click.option("--plugin", "plugins", multiple=True, help="Only this implementation's runs (repeatable).")
@click.option(
    "--filter",
    "filter_string",
    default="",
    help="MLflow search filter, e.g. \"params.lr = '0.1' and metrics.test_accuracy > 0.9\".",
)
@click.option("--all-params", is_flag=True, help="Show every parameter, not only those that differ between rows.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json"]), default="table", show_default=True)
@click.option(
    "--figure", type=click.Path(dir_okay=False, path_type=Path), help="Also write the overlay figure here (.png, .pdf or .svg)."
)
@store_option
def compare(
    group: str | None,
    experiments: tuple[str, ...],
    plugins: tuple[str, ...],
    filter_string: str,
    all_params: bool,
    fmt: str,
    figure: Path | None,
    tracking_uri: str | None,
) -> None:
    """Compare runs read back from MLflow: one row per implementation and parameter set, seeds as mean ± std."""
    from mlp_lab import compare as comparing

    figure = comparing.figure_path(figure) if figure is not None else None
    client = comparing.open_client(tracking_uri)
    try:
        result = comparing.select(client, group, experiments, plugins, filter_string, all_params)
    except comparing.NothingToCompare as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.render(fmt), nl=False)
    absent = [name for name in dict.fromkeys(plugins) if name not in {row.plugin for row in result.rows}]
    if absent:  # asked for, but none of the runs compared are its
        click.echo(f"Note: no runs of {', '.join(absent)} in {result.title[0].lower()}{result.title[1:]}", err=True)
    if figure is not None and not result.has_curves:
        raise click.ClickException(f"--figure {figure}: none of these runs finished, so there is no curve to draw; not written")
    if figure is not None:
        try:
            comparing.figure(client, result).savefig(figure, dpi=120)
        except OSError as exc:
            raise UsageError(f"--figure {figure}: cannot write it ({exc.strerror or exc})") from None
        click.echo(f"Figure: {figure}", err=fmt != "table")


# -- ui --------------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: every one).")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@store_option
def ui(host: str, port: int, tracking_uri: str | None) -> None:
    """Start the MLflow UI on the project's store; runs until Ctrl-C."""
    from mlp_lab import ui as mlflow_ui

    sys.exit(mlflow_ui.serve(tracking_uri, host, port))


# -- predict ---------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.option("--run", "run_id", required=True, help="The run whose logged model classifies the images.")
@click.option("--invert", is_flag=True, help="Images are dark digits on a light background.")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@store_option
def predict(run_id: str, invert: bool, files: tuple[Path, ...], tracking_uri: str | None) -> None:
    """Predict the digit in each image: 28x28 PNGs, or .npy arrays of 28x28 or 784-value images."""
    from mlp_lab import predict as predicting

    for label, digit in predicting.predict(run_id, files, tracking_uri, invert):
        click.echo(f"{label}: {digit}")


# -- new-plugin ------------------------------------------------------------------------------------


@cli.command("new-plugin", context_settings=CONTEXT)
@click.argument("name")
@click.option("--dir", "folder", type=click.Path(path_type=Path), help="Folder to create (default: ./NAME); must not exist.")
def new_plugin(name: str, folder: Path | None) -> None:
    """Write a ready plugin package NAME: entry point, a working model, a conformance test, a README.

    NAME is a distribution name (PEP 508); it also names the entry point and the implementation.
    The plugin guide (mlp-lab plugins --guide) has the contract.
    """
    from mlp_lab.scaffold import create

    names, target, files = create(name, folder)
    click.echo(f"Created plugin '{names.name}' (module {names.module}) in {target}:")
    click.echo("".join(f"  {f}\n" for f in files), nl=False)
    import shlex
    import shutil

    python = shlex.quote(sys.executable)  # the Python mlp-lab runs on: its pip installs where mlp-lab looks
    script = shutil.which("mlp-lab", path=str(Path(sys.executable).parent))  # this mlp-lab, venv active or not
    mlp_lab = shlex.quote(script) if script else f"{python} -m mlp_lab"
    click.echo(
        "Next:\n"
        f"  {python} -m pip install -e {shlex.quote(f'{target}[test]')}\n"
        f"  {mlp_lab} plugins\n"
        f"  {mlp_lab} run --plugin {names.name} --tiny --steps 200\n"
        f"  {python} -m pytest {shlex.quote(str(target / 'tests'))}\n"
        f"The contract, and what each check means: {mlp_lab} plugins --guide"
    )


if __name__ == "__main__":
    main()
