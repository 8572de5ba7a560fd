"""Step 1 of the seed, from scratch: a 784-H-10 tanh MLP with a sum-of-squares loss.

Forward and backward are written by hand, side by side, as in the notebook; ``mlp-lab
gradcheck --plugin scratch`` compares every gradient with autograd's ("backprop ninja").
Shapes: x (N, 784), w1 (784, H), b1 (H,), w2 (H, 10), b2 (10,).
"""

from __future__ import annotations

import torch

from mlp_lab import Model


def sigma(x):
    return torch.tanh(x)


def dsigma(x):
    return 1.0 - torch.tanh(x) ** 2


def loss(v, t):
    return torch.sum(torch.pow(v - t, 2))


def dloss(v, t):
    return -2.0 * (t - v)


def init(hidden: int, std: float) -> dict[str, torch.Tensor]:
    """Weights drawn from N(0, std), zero biases (the seed's ``init``)."""
    return {
        "w1": torch.zeros(784, hidden).normal_(0.0, std),
        "b1": torch.zeros(hidden),
        "w2": torch.zeros(hidden, 10).normal_(0.0, std),
        "b2": torch.zeros(10),
    }


def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    z1 = x @ p["w1"] + p["b1"]  # (N, H)
    h1 = sigma(z1)
    z2 = h1 @ p["w2"] + p["b2"]  # (N, 10)
    h2 = sigma(z2)
    return {"z1": z1, "h1": h1, "z2": z2, "h2": h2}


def backward(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, a: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    dh2 = dloss(a["h2"], y)  # (N, 10)
    dz2 = dsigma(a["z2"]) * dh2
    dw2 = a["h1"].T @ dz2  # (H, 10)
    db2 = dz2.sum(0)
    dh1 = dz2 @ p["w2"].T  # (N, H)
    dz1 = dsigma(a["z1"]) * dh1
    dw1 = x.T @ dz1  # (784, H)
    db1 = dz1.sum(0)
    return {"h2": dh2, "z2": dz2, "w2": dw2, "b2": db2, "h1": dh1, "z1": dz1, "w1": dw1, "b1": db1}


class Scratch(Model):
    """Plain tensors, no autograd: the update is ``p -= lr / N * dp``."""

    def __init__(self, hp):
        super().__init__(hp)
        self.p = init(hp.hidden, hp.init_std)

    def parameters(self):
        return self.p

    def predict(self, x):
        return forward(self.p, x)["h2"]

    def loss(self, batch):
        return loss(self.predict(batch.x), self.hp.target_scale * batch.onehot)

    def forward_backward(self, batch):
        y = self.hp.target_scale * batch.onehot
        a = forward(self.p, batch.x)
        return loss(a["h2"], y), a, backward(self.p, batch.x, y, a)

    def step_key(self, step):
        return step < self.hp.decay_at  # the only Python number that changes: the learning rate decays once

    def train_step(self, batch, step):
        lsi, _, grads = self.forward_backward(batch)
        lr = self.hp.lr if step < self.hp.decay_at else self.hp.lr * self.hp.decay
        lr = lr / len(batch)
        with torch.no_grad():
            for name, p in self.p.items():
                p += -lr * grads[name]
        return lsi
