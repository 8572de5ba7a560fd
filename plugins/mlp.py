"""The configurable MLP behind the ladder of improved variants (``mlp_lab_plugins.variants``).

One model class whose hyperparameters switch each improvement on, so that the variants differ
only in their defaults. With ``activation=tanh``, ``loss=mse``, ``init=default``, no norm, no
dropout, ``schedule=constant`` and no augmentation it is the seed's step 3 (``nn-module``) to
the last bit: the same modules, created in the same order, the same AdamW.

Randomness (initialisation, dropout masks, augmentation) comes from torch's global generator,
which the core seeds, so the same seed gives the same numbers.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from mlp_lab import Model

SIDE = 28  # MNIST images are 28 x 28


class MLP(Model):
    """``layers`` hidden layers of ``hidden`` units (Linear, optional norm, activation, dropout), then Linear to 10.

    With ``loss=mse`` the output goes through tanh and is trained towards ``target_scale`` times the
    one-hot targets (the seed's recipe); with ``loss=cross-entropy`` the outputs are logits for a
    softmax cross-entropy. Optimiser: AdamW, with a constant or warm-up + cosine learning rate.
    """

    @classmethod
    def check_hyperparams(cls, hp):
        if hp.norm == "batch" and hp.batch_size == 1:
            raise ValueError("norm=batch needs batches of 2 or more images (batch statistics of one are undefined)")

    def __init__(self, hp):
        super().__init__(hp)
        modules: list[nn.Module] = []
        if hp.input_dropout > 0:
            modules.append(nn.Dropout(hp.input_dropout))
        width = self.n_in
        for _ in range(hp.layers):
            modules.append(nn.Linear(width, hp.hidden))
            if hp.norm == "batch":
                modules.append(nn.BatchNorm1d(hp.hidden))
            elif hp.norm == "layer":
                modules.append(nn.LayerNorm(hp.hidden))
            modules.append(nn.ReLU() if hp.activation == "relu" else nn.Tanh())
            if hp.dropout > 0:
                modules.append(nn.Dropout(hp.dropout))
            width = hp.hidden
        modules.append(nn.Linear(width, self.n_out))
        if hp.loss == "mse":
            modules.append(nn.Tanh())
        self.net = nn.Sequential(*modules)
        if hp.init == "kaiming":
            for m in self.net:
                if isinstance(m, nn.Linear):
                    nonlinearity = hp.activation if m.out_features != self.n_out else "linear"
                    nn.init.kaiming_normal_(m.weight, nonlinearity=nonlinearity)
                    nn.init.zeros_(m.bias)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        self.device_step: torch.Tensor | None = None  # the step count on the device, when the schedule runs there

    def parameters(self):
        return dict(self.net.named_parameters())

    def predict(self, x):
        return self.net(x)

    def loss(self, batch):
        out = self.net(batch.x)
        if self.hp.loss == "mse":
            return F.mse_loss(out, self.hp.target_scale * batch.onehot)
        return F.cross_entropy(out, batch.y, label_smoothing=self.hp.label_smoothing)

    def step_key(self, step):
        # Recorded steps (the optimiser is then capturable) compute a changing learning rate on the
        # device: one key. Otherwise the learning rate is a Python number, one key per value.
        if self.schedule_on_device():
            return "schedule on the device"
        return lr_factor(step, self.hp.steps, self.hp.schedule, self.hp.warmup)

    def schedule_on_device(self) -> bool:
        return self.hp.schedule != "constant" and bool(self.optimizer.param_groups[0].get("capturable"))

    def set_learning_rate(self, step: int) -> None:
        groups = self.optimizer.param_groups
        if not self.schedule_on_device():
            for group in groups:
                group["lr"] = self.hp.lr * lr_factor(step, self.hp.steps, self.hp.schedule, self.hp.warmup)
            return
        if self.device_step is None:  # first step: the learning rate becomes a tensor next to the parameters
            device = groups[0]["params"][0].device
            self.device_step = torch.full((), float(step), device=device)  # filled there: no copy from the host
            lr = torch.full((), self.hp.lr, device=device)
            for group in groups:
                group["lr"] = lr
        groups[0]["lr"].copy_(self.hp.lr * lr_factor(self.device_step, self.hp.steps, self.hp.schedule, self.hp.warmup))
        self.device_step += 1

    def train_step(self, batch, step):
        if self.hp.augment:
            batch = type(batch)(distort(batch.x, self.hp), batch.y, batch.onehot)
        self.set_learning_rate(step)
        lsi = self.loss(batch)
        self.optimizer.zero_grad()
        lsi.backward()
        self.optimizer.step()
        return lsi.detach()


def lr_factor(step, steps: int, schedule: str, warmup: float):  # noqa: ANN001, ANN201 - int -> float, tensor -> tensor
    """The learning rate at 0-based ``step`` as a fraction of the peak.

    ``constant``: 1. ``cosine``: a linear warm-up over the first ``warmup`` fraction of the steps,
    then half a cosine from 1 down to 0 at the last step. ``step`` may be a tensor (computed there,
    without a branch on its value).
    """
    if schedule == "constant":
        return 1.0
    n_warm = int(warmup * steps)
    progress = (step - n_warm) / max(1, steps - n_warm)
    if isinstance(step, torch.Tensor):
        cosine = 0.5 * (1.0 + torch.cos(math.pi * progress))
        return torch.where(step < n_warm, (step + 1) / max(1, n_warm), cosine)
    if step < n_warm:
        return (step + 1) / n_warm
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def distort(x: torch.Tensor, hp) -> torch.Tensor:  # noqa: ANN001
    """Each image of ``x`` (N, 784, normalised) moved by its own small random affine map and, if asked, an elastic warp.

    Per image: rotation up to ``hp.rotate`` degrees, scaling by up to ``hp.scale`` (relative),
    shift up to ``hp.shift`` pixels in each direction, all uniform; then a smooth random
    displacement of up to ``hp.elastic`` pixels (a 4 x 4 grid of random vectors, upsampled
    bicubically). Resampled bilinearly; outside pixels repeat the border, which is background.
    """
    n = x.shape[0]
    img = x.view(n, 1, SIDE, SIDE)
    uniform = lambda *shape: torch.rand(*shape, device=x.device, dtype=x.dtype) * 2 - 1  # noqa: E731
    angle = uniform(n) * math.radians(hp.rotate)
    zoom = 1 + uniform(n) * hp.scale
    shift = uniform(n, 2) * (hp.shift * 2 / SIDE)  # pixels in grid units (the image spans [-1, 1])
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, SIDE, SIDE], align_corners=False)
    if hp.elastic > 0:
        field = F.interpolate(uniform(n, 2, 4, 4), size=(SIDE, SIDE), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1) * (hp.elastic * 2 / SIDE)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(n, SIDE * SIDE)
