"""What the plain-PyTorch references share: the data, a clock, an evaluation and a command line.

The data is the embedded 1000/1000 MNIST subset that mlp-lab ships, read and normalised as the
seed notebook does (raw grey levels, one scalar mean and unbiased std of the training inputs).
Nothing here imports mlp-lab: a reference is what someone would write by hand.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

EMBEDDED = Path(__file__).resolve().parent.parent / "mlp_lab" / "data" / "mnist-1000"


@dataclass
class Data:
    """Normalised inputs (N, 784), labels (N,) and one-hot targets (N, 10) of both splits, on one device."""

    x: torch.Tensor
    y: torch.Tensor
    onehot: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_onehot: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.x.device


@dataclass
class Result:
    """What a training run measured: time in training steps and in evaluations, and where it ended."""

    steps: int
    train_time_s: float
    eval_time_s: float
    final_train_loss: float
    train_accuracy: float
    test_accuracy: float
    losses: list[float] = field(default_factory=list, repr=False)
    history: list[tuple[int, float, float]] = field(default_factory=list, repr=False)  # (step, train acc, test acc)
    weights: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    predict: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)  # scores of normalised rows

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.train_time_s

    @property
    def loop_time_s(self) -> float:
        return self.train_time_s + self.eval_time_s


def read_idx(folder: Path, name: str) -> torch.Tensor:
    """An IDX file (``name``, gzipped or not) as a uint8 tensor of its shape."""
    path = folder / f"{name}.gz"
    raw = gzip.decompress(path.read_bytes()) if path.exists() else (folder / name).read_bytes()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8).reshape(dims)


def load(device: str | torch.device = "cpu", folder: Path = EMBEDDED) -> Data:
    """Both splits of the MNIST files in ``folder`` (default: the embedded 1000/1000 subset), normalised, on ``device``."""
    x = read_idx(folder, "train-images-idx3-ubyte").reshape(-1, 784).float()
    y = read_idx(folder, "train-labels-idx1-ubyte").long()
    test_x = read_idx(folder, "t10k-images-idx3-ubyte").reshape(-1, 784).float()
    test_y = read_idx(folder, "t10k-labels-idx1-ubyte").long()
    mean, std = x.mean(), x.std()
    onehot = lambda labels: torch.nn.functional.one_hot(labels, 10).float()  # noqa: E731
    tensors = ((x - mean) / std, y, onehot(y), (test_x - mean) / std, test_y, onehot(test_y))
    return Data(*(t.to(device) for t in tensors))


def sync(device: torch.device) -> None:
    """Wait for the device, so that the clock measures work done, not work queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Training time and evaluation time, kept apart."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.train_s, self.eval_s = device, 0.0, 0.0
        self.start = time.perf_counter()

    def training_done(self) -> None:
        sync(self.device)
        self.train_s += time.perf_counter() - self.start
        self.start = time.perf_counter()

    def evaluation_done(self) -> None:
        sync(self.device)
        self.eval_s += time.perf_counter() - self.start
        self.start = time.perf_counter()


@torch.no_grad()
def evaluate(predict: Callable[[torch.Tensor], torch.Tensor], loss: Callable, data: Data) -> list[float]:
    """Loss and accuracy on the training set, then on the test set (one forward pass each)."""
    out = []
    for x, y, onehot in ((data.x, data.y, data.onehot), (data.test_x, data.test_y, data.test_onehot)):
        scores = predict(x)
        out += [loss(scores, onehot).item(), (scores.argmax(1) == y).float().mean().item()]
    return out


def figure(result: Result, title: str) -> Any:
    """The loss and accuracy curves, side by side (a matplotlib Figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.84, wspace=0.22)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(result.losses, lw=0.8)
    ax_loss.set(yscale="log", xlabel="step", ylabel="training loss", title="Training loss")
    steps, train_acc, test_acc = zip(*result.history, strict=True)
    ax_acc.plot(steps, train_acc, label="train")
    ax_acc.plot(steps, test_acc, label="test")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    ax_acc.legend(loc="lower right")
    fig.suptitle(title)
    return fig


def save(result: Result, folder: Path, title: str) -> None:
    """What a training script keeps: the loss and accuracy curves as a PNG, and the weights."""
    folder.mkdir(parents=True, exist_ok=True)
    figure(result, title).savefig(folder / "loss_curve.png")
    torch.save({k: v.detach().cpu() for k, v in result.weights.items()}, folder / "model.pt")


def track(result: Result, data: Data, uri: str, name: str, params: dict[str, Any]) -> str:
    """Log to MLflow by hand, once trained, what ``mlp-lab run`` logs for a run; returns the run id.

    Params, both datasets, every loss (in batches of 1000, as MLflow allows), the evaluations, the
    figure and a pyfunc model (on the CPU) with signature, input example and pinned requirements:
    what a straightforward script pays for tracking a run in MLflow, without mlp-lab.
    """
    import mlflow
    from mlflow.entities import Metric
    from mlflow.models import infer_signature

    class Predictor(mlflow.pyfunc.PythonModel):
        def __init__(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> None:
            self.predict_scores = predict

        def predict(self, context: Any, model_input: Any, params: dict | None = None) -> Any:
            with torch.no_grad():
                return self.predict_scores(torch.as_tensor(model_input)).argmax(1).numpy()

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("plain")
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params(params)
        for x, y, context in ((data.x, data.y, "training"), (data.test_x, data.test_y, "evaluation")):
            dataset = mlflow.data.from_numpy(x.cpu().numpy(), targets=y.cpu().numpy(), name=f"mnist-{context}")
            mlflow.log_input(dataset, context=context)
        stamp = int(time.time() * 1000)
        losses = [Metric("train_loss", v, stamp, step) for step, v in enumerate(result.losses)]
        for start in range(0, len(losses), 1000):
            mlflow.MlflowClient().log_batch(run.info.run_id, metrics=losses[start : start + 1000])
        for step, train_acc, test_acc in result.history:
            mlflow.log_metrics({"train_accuracy": train_acc, "test_accuracy": test_acc}, step=step)
        mlflow.log_metrics({"final_train_loss": result.final_train_loss, "train_time_s": result.train_time_s}, step=result.steps)
        mlflow.log_figure(figure(result, name), "loss_curve.png")
        if result.predict is not None:
            for t in result.weights.values():  # a CPU model, as mlp-lab logs; ``predict`` holds these tensors
                t.data = t.data.cpu()
            if isinstance(result.predict, torch.nn.Module):
                result.predict.cpu()
            model, example = Predictor(result.predict), data.test_x[:5].cpu().numpy()
            mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                signature=infer_signature(example, model.predict(None, example)),
                input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
                step=result.steps,
            )
        return run.info.run_id


def main(train: Callable[..., Result], default_steps: int = 10000) -> None:
    """``python -m benchmarks.ref_NAME [--steps N] [--eval-every K] [--device D] [--out DIR]``: train, print the result as JSON.

    With ``--out`` it also saves the loss curve and the weights there, as mlp-lab does (without tracking);
    with ``--mlflow URI`` it logs what mlp-lab logs to that MLflow store, by hand (:func:`track`).
    """
    parser = argparse.ArgumentParser(description=(train.__module__ and __import__(train.__module__).__doc__) or None)
    parser.add_argument("--steps", type=int, default=default_steps)
    parser.add_argument("--eval-every", type=int, default=None, help="default: steps // 100")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--out", type=Path, help="save loss_curve.png and model.pt here")
    parser.add_argument("--mlflow", metavar="URI", help="log the run to this MLflow store, by hand")
    args = parser.parse_args()
    data = load(args.device)
    result = train(data, args.steps, args.eval_every or max(1, args.steps // 100), args.seed)
    if args.out:
        save(result, args.out, f"{train.__module__} (seed {args.seed})")
    if args.mlflow:
        params = {"steps": args.steps, "eval_every": args.eval_every, "seed": args.seed, "device": args.device}
        track(result, data, args.mlflow, f"{train.__module__} (seed {args.seed})", params)
    print(json.dumps({k: v for k, v in asdict(result).items() if k not in ("losses", "history", "weights", "predict")}))
