"""Discovery through entry points: built-ins declared like third parties, broken plugins isolated."""

from __future__ import annotations

import json

import pytest

from mlp_lab.registry import check_overrides, get_registry

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


def test_the_listing_tells_hand_written_gradients_without_importing_the_model(tmp_path, monkeypatch):
    """Read from the source, the answer agrees with the imported class's; unknowable is None, not a guess."""
    from mlp_lab.listing import hand_written_gradients
    from mlp_lab.registry import Implementation

    for impl in get_registry().implementations.values():
        assert hand_written_gradients(impl) is impl.model_class().has_hand_written_gradients(), impl.name
    (tmp_path / "elsewhere_models.py").write_text(
        "from mlp_lab_plugins.scratch import Scratch\nclass Mine(Scratch):\n    pass\n"
        "class Own(Mine):\n    def forward_backward(self, batch):\n        pass\n"
        "class Model(Own):\n    pass\nclass Local(Model):\n    pass\nclass Assigned(Mine):\n    forward_backward = print\n"
        "import mlp_lab\nclass Other(mlp_lab.Model):\n    pass\n"
    )
    (tmp_path / "self_named.py").write_text("from mlp_lab import Model\nclass Model(Model):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    scratch = get_registry().implementations["scratch"]
    answers = {
        name: hand_written_gradients(Implementation(**{**vars(scratch), "model": f"elsewhere_models:{name}"}))
        for name in ("Mine", "Own", "Missing", "Local", "Assigned", "Other")
    }
    assert answers == {"Mine": None, "Own": True, "Missing": None, "Local": True, "Assigned": True, "Other": False}
    assert hand_written_gradients(Implementation(**{**vars(scratch), "model": "self_named:Model"})) is False


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
    assert result.exit_code == 2 and result.stderr.strip() == (
        "Error: unknown plugin 'scratch'; known: none; MLP_LAB_LOAD_PLUGINS='' loads none"
    )


def test_a_name_in_the_load_filter_that_no_package_has_is_named(monkeypatch, run_cli):
    monkeypatch.setenv("MLP_LAB_LOAD_PLUGINS", "sed,variants")  # a typo for seed
    result = run_cli("run", "--plugin", "scratch")
    assert result.exit_code == 2 and result.stderr.strip().endswith(
        "loads only those entry points, and no installed package has 'sed' (there are: seed, variants)"
    )
    listed = run_cli("plugins", "--json")
    doc = json.loads(listed.stdout)
    assert (doc["load_filter"], doc["load_filter_unmatched"]) == (["sed", "variants"], ["sed"])
    shown = run_cli("plugins", env={"COLUMNS": "200"})
    assert "MLP_LAB_LOAD_PLUGINS names 'sed', which no installed package has (there are: seed, variants)." in shown.stdout
    monkeypatch.setenv("MLP_LAB_LOAD_PLUGINS", "mlp-lab:seed")  # a distribution's own entry point: matched
    assert json.loads(run_cli("plugins", "--json").stdout)["load_filter_unmatched"] == []


def test_a_model_module_that_cannot_be_read_is_shown_by_the_listing(run_cli, plugin_dist, monkeypatch, tmp_path):
    """Registered by path, the model is not imported to list it; a syntax error in it is still said, in red."""
    (tmp_path / "slip_model.py").write_text("class Slip(Model)\n    pass\n")  # the colon forgotten
    monkeypatch.syspath_prepend(str(tmp_path))
    registering = GOOD.replace("mlp_lab_plugins.scratch:Scratch", "slip_model:Slip").replace('"extra"', '"slip"')
    plugin_dist("slip-plugin", "slip_mod", registering)
    doc = json.loads(run_cli("plugins", "--json").stdout)
    problem = {i["name"]: i["model_problem"] for i in doc["implementations"]}
    assert problem["slip"].startswith("slip_model: SyntaxError: ") and "line 1)" in problem["slip"], problem
    assert problem["scratch"] is None
    assert "slip_model: SyntaxError" in run_cli("plugins", env={"COLUMNS": "200"}).stdout


def test_a_missing_class_or_method_of_a_model_registered_by_path_is_shown_by_the_listing(run_cli, plugin_dist, tmp_path):
    """Read, not imported: a class that is not there, or one whose bases lead to Model without predict, is said."""
    models = tmp_path / "site" / "path_models.py"
    models.parent.mkdir(exist_ok=True)
    models.write_text(
        "from mlp_lab import Model\n\n"
        "class Base(Model):\n    def parameters(self):\n        return {}\n\n"
        "class NoPredict(Base):\n    def loss(self, batch): ...\n    def train_step(self, batch, step): ...\n\n"
        "class Whole(NoPredict):\n    def predict(self, x): ...\n\n"
        "try:\n    from elsewhere import Imported\nexcept ImportError:\n    Imported = Whole\n"
    )
    (models.parent / "own_base.py").write_text(  # a base class of its own that happens to be called Model
        "from path_models import Whole as Model\n\nclass Net(Model):\n    pass\n"
    )
    hook = "from mlp_lab import hookimpl\n\n@hookimpl\ndef register_implementations(register):\n"
    for name, target in (("nope", "Nope"), ("no-predict", "NoPredict"), ("whole", "Whole"), ("imported", "Imported")):
        hook += f"    register({name!r}, 'A model by path.', 'path_models:{target}')\n"
    hook += "    register('own-base', 'Its base is called Model.', 'own_base:Net')\n"
    plugin_dist("path-models", "path_mod", hook)
    doc = json.loads(run_cli("plugins", "--json").stdout)
    problem = {i["name"]: i["model_problem"] for i in doc["implementations"]}
    assert problem["nope"] == "no class Nope in path_models"
    assert problem["no-predict"] == "model 'path_models:NoPredict' lacks predict"
    assert problem["whole"] is None and problem["imported"] is None  # bound under try: not a problem
    assert problem["own-base"] is None  # not mlp-lab's Model: its methods cannot be told from here


def test_a_plugin_folder_not_installed_yet_says_how_to_install_it(run_cli, store, tmp_path):
    import sys

    (tmp_path / "my-mlp").mkdir()
    (tmp_path / "my-mlp" / "pyproject.toml").write_text("[project]\nname = 'my-mlp'\n")  # as new-plugin leaves it
    result = run_cli("run", "--plugin", "my-mlp")
    assert result.exit_code == 2 and result.stderr.rstrip().endswith(
        f"; ./my-mlp is a package, not installed here: {sys.executable} -m pip install -e ./my-mlp"
    ), result.stderr


@pytest.mark.parametrize("value, traced", [("1", True), ("yes", True), ("0", False), ("off", False), ("", False)])
def test_plugin_tracing_is_on_for_yes_and_off_for_no(monkeypatch, run_cli, value, traced):
    monkeypatch.setenv("MLP_LAB_TRACE_PLUGINS", value)
    assert ("[mlp-lab trace]" in run_cli("plugins", "--json").stderr) is traced


def _registering(*names: str) -> str:
    calls = "".join(
        f"    register({n!r}, 'A copy of scratch.', 'mlp_lab_plugins.scratch:Scratch', options=OPTIONS)\n" for n in names
    )
    return (
        "from mlp_lab import Option, hookimpl\nfrom mlp_lab_plugins.seed import TANH_MSE\n"
        "OPTIONS = (*TANH_MSE, Option('decay_at', int, 5000), Option('decay', float, 0.1))\n\n"
        f"@hookimpl\ndef register_implementations(register):\n{calls}"
    )


def test_entry_point_names_may_repeat_across_distributions(plugin_dist, monkeypatch):
    """Entry-point names are unique within a distribution only: two distributions' ``models`` both load, and
    a third-party entry point named like a built-in one (``seed``) does not push out either."""
    plugin_dist("first-dist", "first_models", _registering("first-a", "shared-name"), entry_points={"models": "first_models"})
    plugin_dist("second-dist", "second_models", _registering("second-a", "shared-name"), entry_points={"models": "second_models"})
    plugin_dist("third-dist", "third_models", _registering("third-a"), entry_points={"seed": "third_models"})
    registry = get_registry()
    assert registry.broken == []
    assert {"first-a", "second-a", "third-a", "shared-name", "second-dist:shared-name", "scratch"} <= set(
        registry.implementations
    )
    assert registry.implementations["shared-name"].distribution == "first-dist"
    assert [c.error for c in registry.clashes] == [
        "name 'shared-name' is taken by first-dist; registered as 'second-dist:shared-name'"
    ]
    monkeypatch.setenv("MLP_LAB_LOAD_PLUGINS", "mlp-lab:seed,second-dist:models")  # one of each repeated name
    get_registry.cache_clear()
    assert {i.distribution for i in get_registry().implementations.values()} == {"mlp-lab", "second-dist"}


def test_one_module_under_two_entry_points_is_reported_once(plugin_dist):
    plugin_dist("twice-dist", "twice_models", _registering("twice-a"), entry_points={"a": "twice_models", "b": "twice_models"})
    registry = get_registry()
    assert "twice-a" in registry.implementations
    assert [(b.plugin, b.error) for b in registry.broken] == [("b", "its module twice_models is already loaded as plugin 'a'")]


RULE = "(a letter or _ first, then letters, digits, _ . -)"


def test_bad_registrations_are_rejected_with_the_reason(plugin_dist):
    code = """
    import enum
    import pathlib

    from mlp_lab import Option, hookimpl

    class Act(enum.Enum):
        RELU = "relu"

    @hookimpl
    def register_implementations(register):
        model = "mlp_lab_plugins.scratch:Scratch"
        register("eq-name", "Bad option name.", model, options=(Option("a=b", int, 1),))
        register("dup-option", "An option twice.", model, options=(Option("k", int, 1), Option("k", int, 2)))
        register("seed-option", "Its option would hide the run's seed.", model, options=(Option("seed", int, 5),))
        register("values-option", "Its option would hide hp.values.", model, options=(Option("values", int, 5),))
        register("dunder-option", "hp.__x cannot be read.", model, options=(Option("__x", int, 5),))
        register("digit-option", "Starts with a digit.", model, options=(Option("2nd", int, 5),))
        register("dup-name", "First.", model)
        register("dup-name", "Second, from the same plugin.", model)
        register("dash-option", "-p drop-rate=... sets it.", model, options=(Option("drop-rate", float, 0.1),))
        register("type-text", "Its option's type is a string.", model, options=(Option("alpha", "float", 0.1),))
        register("fine", "Registered beside the bad ones; it counts.", model, options=(Option("gamma", float, 0.1, max=0.2),),
                 defaults={"gamma": 0.15})
        register("all", "Could never run alone.", model)
        register("two-lines", "Line one.\\nLine two.", model)
        register("int-default", "2.7 would run as 2.", model, options=(Option("n", int, 2.7),))
        register("hidden-default", "100.7 would run as 100.", model, defaults={"hidden": 100.7})
        register("converted", "Defaults its types convert, as they did before.", model,
                 options=(Option("out", pathlib.Path, "out"), Option("on", bool, "yes"), Option("act", Act, "relu"),
                          Option("clip", float, None), Option("momentum", float, "0.9")), defaults={"clip": 1.0, "steps": 200.0})
        register("own-default", "Over its option's max.", model, options=(Option("gamma", float, 0.1, max=0.2),),
                 defaults={"gamma": 0.3})
    """
    plugin_dist("bad-dist", "bad_models", code)
    registry = get_registry()
    assert {b.implementation: b.error for b in registry.broken} == {
        "eq-name": "implementation 'eq-name': invalid option name 'a=b' " + RULE,
        "dup-option": "implementation 'dup-option': option 'k' is declared twice",
        "seed-option": "implementation 'seed-option': option 'seed' would clash with the run parameter of that name",
        "values-option": "implementation 'values-option': option 'values' would hide hp.values of mlp_lab.Hyperparams",
        "dunder-option": "implementation 'dunder-option': invalid option name '__x' " + RULE,
        "digit-option": "implementation 'digit-option': invalid option name '2nd' " + RULE,
        "dup-name": "registers 'dup-name' twice",
        "type-text": "implementation 'type-text': option 'alpha' needs a type such as float, got 'float'",
        "all": "the implementation name 'all' is taken by --plugin all, which runs every implementation",
        "two-lines": "implementation 'two-lines' needs a one-line description, got 'Line one.\\nLine two.'",
        "int-default": "implementation 'int-default': default n=2.7 would run as 2 (int)",
        "hidden-default": "implementation 'hidden-default': default hidden=100.7 would run as 100 (int)",
        "own-default": "implementation 'own-default': default gamma=0.3: gamma must be <= 0.2, got 0.3",
    }
    assert registry.implementations["dup-name"].description == "First."
    dashed = [registry.implementations["dash-option"]]  # -p takes its name as typed, and reads batch-size as batch_size
    assert check_overrides(dashed, {"drop-rate": "0.3", "batch-size": "5"}) == {"drop-rate": "0.3", "batch_size": "5"}
    assert dashed[0].hyperparams({"drop-rate": "0.3"}).values["drop-rate"] == 0.3
    converted = registry.implementations["converted"]
    assert converted.hyperparams({"clip": None}).clip is None and converted.hyperparams({}).clip == 1.0
    # numbers and flags are kept as they run, so the listing and the logged params show 0.9, 200 and True
    assert [converted.default(n) for n in ("momentum", "steps", "on", "out")] == [0.9, 200, True, "out"]
    assert type(converted.default("steps")) is int
    fine = registry.implementations["fine"]
    assert fine.default("gamma") == 0.15 and fine.hyperparams({}).gamma == 0.15  # listed as it runs
    from mlp_lab.listing import plugin_listing

    (listed,) = [i for i in plugin_listing()["implementations"] if i["name"] == "fine"]
    assert listed["options"][0]["default"] == listed["defaults"]["gamma"] == 0.15
    assert registry.clashes == []


def test_every_parameter_a_run_logs_beside_the_hyperparameters_is_reserved():
    import torch

    from mlp_lab.data import load
    from mlp_lab.options import RUN_PARAMS
    from mlp_lab.runs import RunSpec, device_params, params_of

    impl = get_registry().get("scratch")
    spec = RunSpec(impl, impl.model_class(), impl.hyperparams({}), 1)
    logged = {**params_of(spec, load("tiny"), torch.device("cpu")), **device_params(torch.device("cpu"))}
    assert set(logged) - set(spec.hp.as_dict()) - {"eval_every"} == RUN_PARAMS


def test_an_implementations_own_eval_every_scales_with_the_steps_asked_for(run_cli, store):
    """dropout evaluates every 600 of its 10,000 steps: 100 steps are evaluated every 6, not twice in all."""
    dropout = get_registry().get("dropout")
    assert (dropout.default("steps"), dropout.default("eval_every")) == (10000, 600)
    assert dropout.hyperparams({"steps": "100"}).eval_every == 6
    assert dropout.hyperparams({"steps": 100, "eval_every": 50}).eval_every == 50  # as asked
    assert dropout.hyperparams({}).eval_every == 600 and dropout.hyperparams({"steps": 1}).eval_every == 1
    assert get_registry().get("best").hyperparams({"steps": 12000}).eval_every == 600  # longer: still once an epoch
    assert get_registry().get("relu").hyperparams({"steps": 100}).eval_every is None  # steps // 100, by itself
    result = run_cli("run", "--plugin", "scratch", "--tiny", "--steps", "3", "--eval-every", "10", "-q")
    assert result.exit_code == 0
    note = "Note: eval_every is more than steps for scratch (10 > 3): evaluated before training and at its end only"
    assert note in result.stderr
