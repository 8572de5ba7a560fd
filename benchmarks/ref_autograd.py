"""Plain PyTorch, the seed notebook's step 2: the step-1 network and initialisation, gradients from ``backward()``.

Full batch, loss ``MSELoss * n_elements`` (the sum of squares), plain SGD at lr 0.1/n throughout.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.plain import Clock, Data, Result, evaluate, main

PLUGIN = "autograd"


def train(data: Data, steps: int = 10000, eval_every: int = 100, seed: int = 1337) -> Result:
    x, target, n = data.x, 0.9 * data.onehot, data.x.shape[0]
    torch.manual_seed(seed)
    w1, b1 = torch.zeros(784, 50).normal_(0.0, 1e-3), torch.zeros(50)
    w2, b2 = torch.zeros(50, 10).normal_(0.0, 1e-3), torch.zeros(10)
    params = [t.to(data.device).requires_grad_(True) for t in (w1, b1, w2, b2)]
    w1, b1, w2, b2 = params

    def predict(x):
        return torch.tanh(torch.tanh(x @ w1 + b1) @ w2 + b2)

    def loss_fn(scores, onehot):
        y = 0.9 * onehot
        return nn.functional.mse_loss(scores, y) * y.nelement()

    losses = torch.empty(steps, device=data.device)
    clock = Clock(data.device)
    _, train_acc, _, test_acc = evaluate(predict, loss_fn, data)
    history = [(0, train_acc, test_acc)]
    clock.evaluation_done()
    for step in range(steps):
        loss = nn.functional.mse_loss(predict(x), target) * target.nelement()
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in params:
                p += -(0.1 / n) * p.grad
        losses[step] = loss.detach()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            clock.training_done()
            _, train_acc, _, test_acc = evaluate(predict, loss_fn, data)
            history.append((step + 1, train_acc, test_acc))
            clock.evaluation_done()
    values = losses.tolist()
    weights = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    return Result(steps, clock.train_s, clock.eval_s, values[-1], train_acc, test_acc, values, history, weights, predict)


if __name__ == "__main__":
    main(train)
