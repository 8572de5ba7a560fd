"""Plain PyTorch, the GPU baseline on full MNIST: a 784-1024-1024-10 ReLU MLP with dropout 0.2, batch 512,
Adam with a one-cycle schedule, the data held on the device.

Evaluates the test accuracy every ``eval_every`` steps and reports the training time (evaluations
excluded) at which it first reaches ``target``. Not the mirror of a plugin (``PLUGIN = None``).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.plain import Clock, Data

PLUGIN = None


def train(data: Data, epochs: int = 4, eval_every: int = 20, seed: int = 1337, target: float = 0.98) -> dict[str, float]:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Dropout(0.2), nn.Linear(1024, 1024), nn.ReLU(), nn.Dropout(0.2), nn.Linear(1024, 10)
    ).to(data.device)
    n, batch = data.x.shape[0], 512
    per_epoch = n // batch
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=epochs * per_epoch)
    generator = torch.Generator(device=data.device).manual_seed(seed)
    reached, accuracy, step = None, 0.0, 0
    clock = Clock(data.device)
    for _ in range(epochs):
        order = torch.randperm(n, device=data.device, generator=generator)
        for i in range(per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            loss = nn.functional.cross_entropy(net(data.x[idx]), data.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % eval_every == 0 or step == epochs * per_epoch:
                clock.training_done()
                net.eval()
                with torch.no_grad():
                    accuracy = (net(data.test_x).argmax(1) == data.test_y).float().mean().item()
                net.train()
                if reached is None and accuracy >= target:
                    reached = clock.train_s
                clock.evaluation_done()
    return {
        "steps": step,
        "train_time_s": clock.train_s,
        "test_accuracy": accuracy,
        "time_to_target_s": float("nan") if reached is None else reached,
    }
