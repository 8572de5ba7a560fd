"""Plain PyTorch, the seed notebook's step 3: ``nn.Linear`` 784-200-10 with tanh, ``nn.MSELoss``, AdamW lr 1e-3.

Full batch, towards 0.9-scaled one-hot targets; AdamW's default weight decay (0.01).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.plain import Clock, Data, Result, evaluate, main

PLUGIN = "nn-module"


def train(data: Data, steps: int = 10000, eval_every: int = 100, seed: int = 1337) -> Result:
    x, target = data.x, 0.9 * data.onehot
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(784, 200), nn.Tanh(), nn.Linear(200, 10), nn.Tanh()).to(data.device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = nn.MSELoss()

    losses = torch.empty(steps, device=data.device)
    clock = Clock(data.device)
    _, train_acc, _, test_acc = evaluate(net, lambda scores, onehot: loss_fn(scores, 0.9 * onehot), data)
    history = [(0, train_acc, test_acc)]
    clock.evaluation_done()
    for step in range(steps):
        loss = loss_fn(net(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses[step] = loss.detach()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            clock.training_done()
            net.eval()
            _, train_acc, _, test_acc = evaluate(net, lambda scores, onehot: loss_fn(scores, 0.9 * onehot), data)
            net.train()
            history.append((step + 1, train_acc, test_acc))
            clock.evaluation_done()
    values = losses.tolist()
    return Result(steps, clock.train_s, clock.eval_s, values[-1], train_acc, test_acc, values, history, net.state_dict(), net)


if __name__ == "__main__":
    main(train)
