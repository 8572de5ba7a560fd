"""Step 2 of the seed: the scratch network and initialisation, gradients from autograd."""

from __future__ import annotations

import torch
from torch import nn

from mlp_lab import Model
from mlp_lab_plugins.scratch import forward, init


class Autograd(Model):
    """``loss.backward()`` replaces the hand-written backward; plain SGD at lr / N."""

    def __init__(self, hp):
        super().__init__(hp)
        self.p = init(hp.hidden, hp.init_std)
        for t in self.p.values():
            t.requires_grad_(True)

    def parameters(self):
        return self.p

    def predict(self, x):
        return forward(self.p, x)["h2"]

    def loss(self, batch):
        y = self.hp.target_scale * batch.onehot
        return nn.functional.mse_loss(self.predict(batch.x), y) * y.nelement()

    def step_key(self, step):
        return None  # every step launches the same work

    def train_step(self, batch, step):
        lsi = self.loss(batch)
        for p in self.p.values():
            p.grad = None
        lsi.backward()
        lr = self.hp.lr / len(batch)
        with torch.no_grad():
            for p in self.p.values():
                p += -lr * p.grad
        return lsi.detach()
