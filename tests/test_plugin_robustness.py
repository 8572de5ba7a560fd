"""Broken third-party plugins, each a real distribution with entry points: every one gets a message
naming it and its distribution, and none breaks ``mlp-lab plugins``, ``--help`` or other runs."""

from __future__ import annotations

import json
import re

import pytest

from mlp_lab.registry import get_registry

from .conftest import runs_in

LINEAR = """
import torch
from mlp_lab import Model

class Linear(Model):
    def __init__(self, hp):
        super().__init__(hp)
        self.w = torch.zeros(784, 10)

    def parameters(self):
        return {"w": self.w}

    def predict(self, x):
        return x @ self.w

    def loss(self, batch):
        return ((self.predict(batch.x) - batch.onehot) ** 2).sum()

    def train_step(self, batch, step):
        return self.loss(batch)
"""

PLUGINS = {
    # dist: (module, code)
    "exits-at-import": ("exits_mod", "import sys\nsys.exit(3)\n"),
    "chatty": (
        "chatty_mod",
        "print('hello from chatty')\nfrom mlp_lab import hookimpl\n\n@hookimpl\ndef register_implementations(register):\n"
        "    print('registering chatty')\n"
        "    register('chatty', 'Prints while loading.', 'mlp_lab_plugins.scratch:Scratch', options=__import__("
        "'mlp_lab_plugins.seed').seed.TANH_MSE + (__import__('mlp_lab').Option('decay_at', int, 5000),"
        " __import__('mlp_lab').Option('decay', float, 0.1)))\n",
    ),
    "hook-typo": ("typo_mod", "from mlp_lab import hookimpl\n\n@hookimpl\ndef register_implementation(register):\n    pass\n"),
    "undecorated": ("undecorated_mod", "def register_implementations(register):\n    pass\n"),
    "registers-nothing": (
        "nothing_mod",
        "from mlp_lab import hookimpl\n\n@hookimpl\ndef register_implementations(register):\n    return ['linear']\n",
    ),
    "half-good": (
        "half_mod",
        LINEAR
        + """
from mlp_lab import hookimpl

class NoPredict(Linear):
    predict = None

@hookimpl
def register_implementations(register):
    register("no-predict", "Lacks predict.", NoPredict)
    register("linear-ok", "A linear model that never learns, kept although its sibling is rejected.", Linear)
""",
    ),
    "lazy-gap": (
        "lazy_mod",
        LINEAR
        + """
from mlp_lab import hookimpl

class NoLoss(Linear):
    loss = None

@hookimpl
def register_implementations(register):
    register("lazy-gap", "Registered by path; the class lacks loss.", "lazy_mod:NoLoss")
    register("import-raises", "Registered by path; its module raises a two-line error.", "raising_model:Model")
""",
    ),
    "inf-loss": (
        "inf_mod",
        LINEAR
        + """
import torch
from mlp_lab import hookimpl

class Inf(Linear):
    def train_step(self, batch, step):
        return torch.tensor(float("inf")) if step == 2 else self.loss(batch)

class Exits(Linear):
    def train_step(self, batch, step):
        if step == 2:
            raise SystemExit(3)
        return self.loss(batch)

class ThreeScores(Linear):
    def predict(self, x):
        return (x @ self.w)[:, :3]

    def loss(self, batch):
        return ((batch.x @ self.w - batch.onehot) ** 2).sum()

class FloatLoss(Linear):
    def train_step(self, batch, step):
        return self.loss(batch).item() if step == 2 else self.loss(batch)

class ListParams(Linear):
    def parameters(self):
        return [self.w]

class NaNScores(Linear):
    def predict(self, x):
        return torch.full((len(x), 10), float("nan"))

class FloatEvalLoss(Linear):
    def loss(self, batch):
        return super().loss(batch).item()

    def train_step(self, batch, step):
        return super().loss(batch)

class KeepsItsGraph(Linear):
    def train_step(self, batch, step):
        self.w.requires_grad_(True)
        self.last_loss = self.loss(batch)  # not detached: a tensor with a graph, which cannot be copied
        self.w.requires_grad_(False)
        return self.last_loss.detach()

class TwoLines(Linear):
    def __init__(self, hp):
        raise ValueError("bad hidden size\\nsecond line of the message")

class BrokenCheck(Linear):
    @classmethod
    def check_hyperparams(cls, hp):
        return hp.no_such_option  # a bug in the check itself: AttributeError, not a refusal

class ExitsCheck(Linear):
    @classmethod
    def check_hyperparams(cls, hp):
        raise SystemExit(3)

class PlainCheck(Linear):
    def check_hyperparams(self, hp):  # not a classmethod: no model is built to call it on
        pass

class NarrowOnly(Linear):
    @classmethod
    def check_hyperparams(cls, hp):
        if hp.hidden > 100 and hp.lr > 0.01:
            raise ValueError(f"hidden {hp.hidden} needs lr 0.01 or less\\nsecond line")

class HoldsALock(Linear):
    def __init__(self, hp):
        super().__init__(hp)
        import threading
        self.guard = threading.Lock()

@hookimpl
def register_implementations(register):
    register("inf-loss", "Its loss becomes infinite at step 2.", Inf)
    register("exits-in-step", "Calls sys.exit(3) at step 2.", Exits)
    register("three-scores", "Predicts 3 scores instead of 10.", ThreeScores)
    register("float-loss", "Returns its loss as a float at step 2.", FloatLoss)
    register("list-params", "Its parameters() is a list.", ListParams)
    register("holds-a-lock", "Cannot be saved: it holds a lock.", HoldsALock)
    register("nan-scores", "Predicts NaN scores.", NaNScores)
    register("float-eval-loss", "Its loss() returns a float.", FloatEvalLoss)
    register("two-lines", "Raises with a two-line message.", TwoLines)
    register("keeps-its-graph", "Keeps its last loss with its graph, found only at the end.", KeepsItsGraph)
    register("broken-check", "Its check_hyperparams raises AttributeError.", BrokenCheck)
    register("exits-check", "Its check_hyperparams calls sys.exit.", ExitsCheck)
    register("plain-check", "Its check_hyperparams is a plain method.", PlainCheck)
    register("narrow-only", "Refuses a wide hidden layer with a large learning rate.", NarrowOnly)
""",
    ),
    "clash-dist": (
        "clash_mod",
        LINEAR
        + """
from mlp_lab import hookimpl

@hookimpl
def register_implementations(register):
    register("scratch", "A third-party implementation that wants the built-in's name.", Linear)
""",
    ),
}


HOOK = "from mlp_lab import hookimpl\n\n@hookimpl\ndef register_implementations(register):\n"
REGISTERS_LINEAR = HOOK + "    register('{name}', 'A linear model.', 'half_mod:Linear')\n"


@pytest.fixture
def broken_world(plugin_dist):
    for dist, (module, code) in PLUGINS.items():
        site = plugin_dist(dist, module, code)
    (site / "raising_model.py").write_text("raise RuntimeError('first line\\nsecond line')\n")  # lazy-gap's by-path sibling
    raises = REGISTERS_LINEAR.format(name="raises-late") + "    raise RuntimeError('hook blew up')\n"
    plugin_dist("raises-late", "late_mod", raises)  # registers, then raises: nothing of it counts
    function = {"fn_mod": "fn_mod:register_implementations"}
    plugin_dist("names-a-function", "fn_mod", REGISTERS_LINEAR.format(name="fn-x"), entry_points=function)
    plugin_dist("wrong-group", "wg_mod", REGISTERS_LINEAR.format(name="wg-x"), group="mlp_lab.plugins")
    plugin_dist("labels", "labels_mod", "", group="mlp_labels")  # some other project's group: none of ours


def test_every_problem_is_listed_with_its_plugin_and_distribution_and_json_stays_clean(broken_world, run_cli):
    result = run_cli("plugins", "--json")
    assert result.exit_code == 0
    listing = json.loads(result.stdout)  # the chatty plugin's prints went to stderr
    assert "hello from chatty" in result.stderr and "registering chatty" in result.stderr
    names = [i["name"] for i in listing["implementations"]]
    assert names[:3] == ["scratch", "autograd", "nn-module"]  # built-ins load first and keep their names
    assert {"chatty", "linear-ok", "lazy-gap", "inf-loss", "clash-dist:scratch"} <= set(names)
    broken = {(b["distribution"], b["implementation"]): b["error"] for b in listing["broken"]}
    assert broken == {
        ("exits-at-import", None): "failed to import exits_mod: SystemExit: 3",
        ("hook-typo", None): "defines unknown hook(s) register_implementation",
        ("undecorated", None): "implements no mlp-lab hook (is register_implementations decorated with @mlp_lab.hookimpl?)",
        ("registers-nothing", None): "registered no implementation"
        " (register_implementations returned a value: call register(...) instead)",
        ("half-good", "no-predict"): "implementation 'no-predict': model lacks predict",
        ("raises-late", None): "raised during registration: RuntimeError: hook blew up",
        ("names-a-function", None): "its entry point names a function (fn_mod:register_implementations);"
        " name the module that holds the hook: 'fn_mod'",
        ("wrong-group", None): "declares its entry point wg_mod in group 'mlp_lab.plugins'; mlp-lab reads group 'mlp_lab'",
    }
    assert not {"raises-late", "fn-x", "wg-x"} & set(names)
    assert all(b["version"] == "0.1" and b["plugin"] for b in listing["broken"])
    assert listing["clashes"] == [
        {
            "plugin": "clash_mod",
            "distribution": "clash-dist",
            "version": "0.1",
            "error": "name 'scratch' is taken by mlp-lab; registered as 'clash-dist:scratch'",
            "implementation": "scratch",
        }
    ]
    clash = next(i for i in listing["implementations"] if i["name"] == "clash-dist:scratch")
    assert (clash["distribution"], clash["plugin"], clash["builtin"]) == ("clash-dist", "clash_mod", False)
    assert clash["location"].endswith("clash_mod.py") and clash["model"] == "clash_mod:Linear"
    assert run_cli("--help").exit_code == 0


def test_a_rejected_implementation_is_a_one_line_error_naming_its_plugin(broken_world, run_cli):
    result = run_cli("run", "--plugin", "no-predict", "--tiny", "--steps", "3")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (  # after what the chatty plugin printed while loading
        "Error: plugin 'half_mod' (half-good 0.1) is broken: implementation 'no-predict': model lacks predict"
    )
    unknown = run_cli("run", "--plugin", "nope", "--tiny")
    assert unknown.exit_code == 2 and "8 plugin problem(s), see 'mlp-lab plugins'" in unknown.stderr
    late = run_cli("run", "--plugin", "raises-late", "--tiny", "--steps", "3")  # it registered the name, then raised
    assert late.exit_code == 2
    says = "Error: plugin 'late_mod' (raises-late 0.1) is broken: raised during registration: RuntimeError: hook blew up"
    assert late.stderr.strip().splitlines()[-1] == says


def test_a_name_two_packages_register_is_said_whose_runs(broken_world, run_cli, store):
    from mlp_lab import testing

    result = run_cli("run", "--plugin", "scratch", "--tiny", "--steps", "2", "-q")
    assert result.exit_code == 0, result.output
    version = get_registry().get("scratch").version
    note = f"Note: two packages register 'scratch': mlp-lab {version}'s runs as 'scratch', clash-dist 0.1's runs as"
    assert note + " 'clash-dist:scratch'" in result.stderr
    with pytest.raises(testing.ConformanceError, match="give yours a name of its own"):
        testing.check_registered("clash-dist:scratch")  # the kit cannot tell which package is under test
    assert testing.check_registered("scratch").builtin  # but a built-in keeps its name, and mlp-lab's tests pass
    assert "Note: two packages" not in run_cli("run", "--plugin", "autograd", "--tiny", "--steps", "2", "-q").stderr


TWICE = """
from mlp_lab import hookimpl

@hookimpl
def register_implementations(register):
    register("twice", "Registered twice by one plugin.", Linear)
    register("twice", "The second time.", Linear)
"""


def test_all_says_what_it_leaves_out_and_a_load_filter_is_named_when_nothing_matches(broken_world, run_cli, store, plugin_dist):
    plugin_dist("twice-dist", "twice_mod", LINEAR + TWICE)  # 'twice' registered twice: the first counts and runs
    env = {"MLP_LAB_LOAD_PLUGINS": "exits_mod,half_mod,twice_mod"}
    result = run_cli("run", "--plugin", "all", "--tiny", "--steps", "2", "-q", env=env)
    assert result.exit_code == 0, result.output
    assert sorted(r.data.params["plugin"] for r in runs_in(store) if r.data.tags["mlp_lab.kind"] == "run") == [
        "linear-ok",
        "twice",
    ]
    assert "Note: --plugin all leaves out what is broken: exits_mod, no-predict (see 'mlp-lab plugins')" in result.stderr
    get_registry.cache_clear()  # loaded once per process: as a new mlp-lab process would
    typo = run_cli("run", "--plugin", "scratch", "--tiny", env={"MLP_LAB_LOAD_PLUGINS": "sed"})
    assert typo.exit_code == 2
    assert typo.stderr.strip().startswith(
        "Error: unknown plugin 'scratch'; known: none; MLP_LAB_LOAD_PLUGINS='sed' loads only those entry points,"
        " and no installed package has 'sed' (there are: "
    )
    assert ", seed, " in typo.stderr and typo.stderr.count("\n") == 1


def test_failing_plugins_end_their_own_runs_failed_and_the_others_finish(broken_world, run_cli, store):
    result = run_cli(
        "run", *("--plugin", "scratch", "--plugin", "lazy-gap", "--plugin", "import-raises", "--plugin", "inf-loss"),
        *("--plugin", "exits-in-step"),
        *("--plugin", "three-scores", "--plugin", "float-loss", "--plugin", "list-params", "--plugin", "holds-a-lock"),
        *("--plugin", "nan-scores", "--plugin", "float-eval-loss", "--plugin", "two-lines", "--plugin", "keeps-its-graph"),
        *("--plugin", "broken-check", "--plugin", "exits-check", "--plugin", "plain-check"),
        *("--plugin", "clash-dist:scratch", "--tiny", "--steps", "5", "-q"),
    )  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    runs = {r.data.params["plugin"]: r for r in runs_in(store) if r.data.tags.get("mlp_lab.kind") == "run"}
    assert {name: r.info.status for name, r in runs.items()} == {
        "scratch": "FINISHED",
        "lazy-gap": "FAILED",
        "import-raises": "FAILED",
        "inf-loss": "FAILED",
        "exits-in-step": "FAILED",  # sys.exit in a plugin ends its run, not the tool
        "three-scores": "FAILED",
        "float-loss": "FAILED",
        "list-params": "FAILED",
        "holds-a-lock": "FAILED",
        "nan-scores": "FAILED",  # not FINISHED with the accuracy of argmax over NaN
        "float-eval-loss": "FAILED",
        "two-lines": "FAILED",
        "keeps-its-graph": "FAILED",
        "broken-check": "FAILED",  # a check that breaks is the plugin's failure, not the user's
        "exits-check": "FAILED",
        "plain-check": "FAILED",
        "clash-dist:scratch": "FINISHED",
    }
    assert runs["scratch"].data.params["plugin_distribution"] == "mlp-lab"
    assert runs["clash-dist:scratch"].data.params["plugin_distribution"] == "clash-dist"
    gap = runs["lazy-gap"].data.tags["mlp_lab.error"]
    assert gap == "implementation 'lazy-gap' (plugin 'lazy_mod' from lazy-gap 0.1): model 'NoLoss' lacks loss"
    assert (
        runs["import-raises"]
        .data.tags["mlp_lab.error"]
        .endswith("cannot import model 'raising_model:Model': RuntimeError: first line")
    )
    inf = runs["inf-loss"].data.tags["mlp_lab.error"]
    assert "(plugin 'inf_mod' from inf-loss 0.1) failed: NonFiniteLoss: the training loss became inf at step 2" in inf
    assert gap in result.stderr and inf in result.stderr
    exits = runs["exits-in-step"].data.tags["mlp_lab.error"]  # where in the plugin's own code, too
    assert re.search(r"failed: SystemExit: 3 \(at inf_mod\.py:\d+ in train_step\)$", exits), exits
    assert (
        runs["three-scores"]
        .data.tags["mlp_lab.error"]
        .endswith("failed: BadScores: predict returned shape (500, 3) for 500 inputs; expected a (500, 10) tensor")
    )
    error = {name: r.data.tags.get("mlp_lab.error") for name, r in runs.items()}
    bad_loss = "failed: BadLoss: train_step must return the loss as a one-element tensor (0-dim), got float"
    assert error["float-loss"].endswith(bad_loss)
    assert runs["float-loss"].data.metrics["train_loss"] > 0  # the two steps before it are kept
    label = "implementation '{}' (plugin 'inf_mod' from inf-loss 0.1)"
    assert error["list-params"] == label.format("list-params") + (
        ": parameters() must return a dict of tensors by name, got list"
    )
    assert error["holds-a-lock"] == label.format("holds-a-lock") + (
        ": the model cannot be saved: attribute 'guard' (lock): TypeError: cannot pickle '_thread.lock' object"
    )
    assert error["nan-scores"].endswith("failed: BadScores: predict returned NaN scores for 500 of 500 inputs")
    float_eval_loss = "failed: BadLoss: loss must return the loss as a one-element tensor (0-dim), got float"
    assert error["float-eval-loss"].endswith(float_eval_loss)
    assert re.search(r"failed: ValueError: bad hidden size \(at inf_mod\.py:\d+ in __init__\)$", error["two-lines"])
    assert "second line" not in result.stderr
    assert error["keeps-its-graph"].startswith(
        label.format("keeps-its-graph") + ": the model cannot be saved: attribute 'last_loss' (Tensor): "
    )
    assert error["broken-check"].startswith(
        label.format("broken-check") + " failed: check_hyperparams raised AttributeError: no hyperparameter 'no_such_option' ("
    )
    assert error["exits-check"].endswith("failed: check_hyperparams raised SystemExit: 3")
    assert error["plain-check"].endswith("check_hyperparams raised TypeError: PlainCheck.check_hyperparams must be a"
                                         " @classmethod (no model is built to check)")  # fmt: skip
    before_training = ("list-params", "holds-a-lock", "broken-check", "exits-check", "plain-check")
    for name in before_training:  # found before training, not after it
        assert "train_loss" not in runs[name].data.metrics


def test_a_combination_the_model_refuses_is_a_one_line_error_before_any_run(broken_world, run_cli, store):
    """``check_hyperparams`` raising ValueError: the user's input, refused by name with no run made, in run and gradcheck."""
    for command in (("run", "--plugin", "scratch", "--tiny", "--steps", "5"), ("gradcheck",)):
        result = run_cli(*command, "--plugin", "narrow-only", "--hidden", "200")
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines()[-1] == "Error: narrow-only: hidden 200 needs lr 0.01 or less"
    assert runs_in(store) == []
    result = run_cli("run", "--plugin", "narrow-only", "--hidden", "200", "--lr", "0.01", "--tiny", "--steps", "2")
    assert result.exit_code == 0, result.output


def test_tracing_prints_each_hook_call_its_arguments_and_its_result(plugin_dist, run_cli, monkeypatch):
    plugin_dist("half-good", "half_mod", PLUGINS["half-good"][1])
    raises = "from mlp_lab import hookimpl\n\n@hookimpl\ndef register_implementations(register):\n    raise RuntimeError('no')"
    plugin_dist("hook-raises", "raises_mod", raises)
    monkeypatch.setenv("MLP_LAB_TRACE_PLUGINS", "1")
    result = run_cli("plugins", "--json")
    assert result.exit_code == 0
    json.loads(result.stdout)  # tracing stays on stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith("[mlp-lab trace] ") for line in lines)
    text = "\n".join(line.removeprefix("[mlp-lab trace] ") for line in lines)
    assert "loading entry point half_mod = half_mod (half-good 0.1)" in text
    # pluggy's own tracing: the call with its argument, then the hook's result
    assert "register_implementations [hook]\n      register: <register for plugin 'half_mod' (half-good 0.1)>" in text
    assert "finish register_implementations --> [] [hook]" in text
    assert "registered 'linear-ok' from plugin 'half_mod' (half-good 0.1)" in text
    assert "plugin 'half_mod' (half-good 0.1) rejected implementation 'no-predict': model lacks predict" in text
    assert "plugin 'raises_mod' (hook-raises 0.1) broken: raised during registration: RuntimeError: no" in text
    assert "registered 'scratch' from plugin 'seed' (mlp-lab " in text


def test_without_tracing_loading_is_silent(plugin_dist, run_cli):
    plugin_dist("half-good", "half_mod", PLUGINS["half-good"][1])
    result = run_cli("plugins", "--json")
    assert result.exit_code == 0 and result.stderr == ""


@pytest.mark.parametrize("width", [80, 120])
def test_the_listing_reads_well_at_80_and_120_columns(broken_world, run_cli, width):
    result = run_cli("plugins", env={"COLUMNS": str(width)})
    assert result.exit_code == 0
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    assert max(map(len, lines)) <= width
    text = "\n".join(lines)
    # headings: name, distribution and version; then whole words, never split across lines
    assert "scratch  mlp-lab " in text and "linear-ok  half-good 0.1" in text and "clash-dist:scratch  clash-dist 0.1" in text
    words = " ".join(text.split())
    for phrase in (
        "Step 1: 784-50-10 tanh MLP, sum-of-squares loss, forward and backward written by hand, full batch.",
        "from entry point 'half_mod' in",
        "defaults steps=10000 lr=0.1 hidden=50 batch_size=full eval_every=steps//100",
        "-p decay_at=5000 int, >=0 step from which the learning rate is multiplied by decay",
        "Name clashes plugin 'clash_mod' (clash-dist 0.1), implementation 'scratch'",
        "name 'scratch' is taken by mlp-lab; registered as 'clash-dist:scratch'",
        "plugin 'exits_mod' (exits-at-import 0.1) failed to import exits_mod: SystemExit: 3",
        "plugin 'half_mod' (half-good 0.1), implementation 'no-predict' implementation 'no-predict': model lacks predict",
    ):
        assert phrase in words, phrase
    if width == 120:  # wide enough: each description on one line
        assert "  Step 1: 784-50-10 tanh MLP, sum-of-squares loss, forward and backward written by hand, full batch." in lines
    assert lines[-1].endswith("8 problems (see above).")


def test_a_plugins_failure_says_where_in_its_code_and_what_to_try():
    from mlp_lab import Model, runs, training

    scratch = get_registry().get("scratch")
    spec = runs.RunSpec(scratch, scratch.model_class(), scratch.hyperparams({}), 0)
    diverged = runs.failure(spec, training.NonFiniteLoss("the training loss became inf at step 1"))
    assert diverged.endswith("became inf at step 1; a wrong gradient can do that: mlp-lab gradcheck --plugin scratch")

    class NoSuper(Model):
        def __init__(self, hp):  # super().__init__(hp) forgotten
            self.w = None

        def lr(self):
            return self.hp.lr

    try:
        NoSuper(None).lr()
    except AttributeError as exc:
        forgot = runs.failure(spec, exc)
    assert forgot.endswith("in lr); does __init__ call super().__init__(hp)?"), forgot
    assert "(at test_plugin_robustness.py:" in forgot
