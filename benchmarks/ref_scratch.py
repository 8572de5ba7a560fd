"""Plain PyTorch, the seed notebook's step 1: a 784-50-10 tanh MLP, sum-of-squares loss, backward by hand.

Full batch, weights from N(0, 1e-3) and zero biases after ``torch.manual_seed(seed)``, learning
rate 0.1/n, times 0.1 from step 5000. Losses stay on the device; evaluation every ``eval_every``.
"""

from __future__ import annotations

import torch

from benchmarks.plain import Clock, Data, Result, evaluate, main

PLUGIN = "scratch"


def train(data: Data, steps: int = 10000, eval_every: int = 100, seed: int = 1337) -> Result:
    x, target, n = data.x, 0.9 * data.onehot, data.x.shape[0]
    torch.manual_seed(seed)
    w1, b1 = torch.zeros(784, 50).normal_(0.0, 1e-3), torch.zeros(50)
    w2, b2 = torch.zeros(50, 10).normal_(0.0, 1e-3), torch.zeros(10)
    w1, b1, w2, b2 = (t.to(data.device) for t in (w1, b1, w2, b2))

    def forward(x):
        z1 = x @ w1 + b1
        h1 = torch.tanh(z1)
        z2 = h1 @ w2 + b2
        return z1, h1, z2, torch.tanh(z2)

    def predict(x):
        return forward(x)[3]

    def sum_of_squares(scores, onehot):
        return torch.sum(torch.pow(scores - 0.9 * onehot, 2))

    losses = torch.empty(steps, device=data.device)
    clock = Clock(data.device)
    _, train_acc, _, test_acc = evaluate(predict, sum_of_squares, data)
    history = [(0, train_acc, test_acc)]
    clock.evaluation_done()
    for step in range(steps):
        z1, h1, z2, h2 = forward(x)
        losses[step] = torch.sum(torch.pow(h2 - target, 2))
        dz2 = (1.0 - torch.tanh(z2) ** 2) * (-2.0 * (target - h2))
        dw2, db2 = h1.T @ dz2, dz2.sum(0)
        dz1 = (1.0 - torch.tanh(z1) ** 2) * (dz2 @ w2.T)
        dw1, db1 = x.T @ dz1, dz1.sum(0)
        lr = (0.1 if step < 5000 else 0.1 * 0.1) / n
        w1 += -lr * dw1
        b1 += -lr * db1
        w2 += -lr * dw2
        b2 += -lr * db2
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            clock.training_done()
            _, train_acc, _, test_acc = evaluate(predict, sum_of_squares, data)
            history.append((step + 1, train_acc, test_acc))
            clock.evaluation_done()
    values = losses.tolist()
    weights = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    return Result(steps, clock.train_s, clock.eval_s, values[-1], train_acc, test_acc, values, history, weights, predict)


if __name__ == "__main__":
    main(train)
