"""Shared fixtures: a tiny digits task and models small enough for exact float64 checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from saal_tasks.registry import TASKS


def free_port() -> int:
    """A TCP port free on this machine now (for a test's process group)."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_task(dtype: str = 'float64', epochs: int = 2, **kwargs):
    """A ClassificationTask on scikit-learn's digits with a 4-channel SmallCNN."""
    cfg = dict(type='ClassificationTask', dataset=dict(type='DigitsData'),
               model=dict(type='SmallCNN', width=4), optimizer=dict(type='Adam', lr=1e-2),
               epochs=epochs, batch_size=32, dtype=dtype, log_interval=1000)
    cfg.update(kwargs)
    return TASKS.build(cfg)


@pytest.fixture(scope='module')
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): tiny
    detection models gain nothing from a second thread, and two OpenMP threads slow down many
    times over when other processes share the two cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='session')
def digits_task():
    return make_task()


@pytest.fixture(scope='session')
def trained_cnn(digits_task):
    """A float64 SmallCNN trained briefly on 200 labeled digits (non-trivial scores)."""
    ids = np.arange(200)
    digits_task.set_annotations(digits_task.ground_truth(ids))
    model = digits_task.build_model(seed=0)
    return digits_task.train(model, ids, seed=0).eval()


class TinyBNNet(nn.Module):
    """Conv + BatchNorm + linear head: checks engines with BatchNorm in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3 * 16, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.head(nn.functional.avg_pool2d(x, 2).flatten(1))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def bit_identical(model: nn.Module, snap: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    return all(torch.equal(state[k], v) and state[k].dtype == v.dtype for k, v in snap.items())
