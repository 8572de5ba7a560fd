"""Step 3 of the seed: the MLP from ``nn.Linear`` and ``nn.Tanh``, ``nn.MSELoss`` and AdamW."""

from __future__ import annotations

import torch
from torch import nn

from mlp_lab import Model


class NNModule(Model):
    """784-H-10 with tanh after both layers, trained towards 0.9-scaled one-hot targets."""

    def __init__(self, hp):
        super().__init__(hp)
        self.net = nn.Sequential(nn.Linear(784, hp.hidden), nn.Tanh(), nn.Linear(hp.hidden, 10), nn.Tanh())
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        self.loss_fn = nn.MSELoss()

    def parameters(self):
        return dict(self.net.named_parameters())

    def predict(self, x):
        return self.net(x)

    def loss(self, batch):
        return self.loss_fn(self.net(batch.x), self.hp.target_scale * batch.onehot)

    def step_key(self, step):
        return None  # every step launches the same work

    def train_step(self, batch, step):
        lsi = self.loss(batch)
        self.optimizer.zero_grad()
        lsi.backward()
        self.optimizer.step()
        return lsi.detach()
