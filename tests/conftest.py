"""Shared fixtures: a tiny digits task and models small enough for exact float64 checks, and
the config of a small digits active-learning run."""
from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import pytest
import torch
from mmengine.config import Config
from torch import nn

from saal_tasks.registry import TASKS

#: The digits task of the tests: scikit-learn digits, a 4-channel SmallCNN, Adam, 2 epochs.
DIGITS_TASK = dict(type='ClassificationTask', dataset=dict(type='DigitsData'),
                   model=dict(type='SmallCNN', width=4), optimizer=dict(type='Adam', lr=1e-2),
                   epochs=2, batch_size=32, log_interval=1000)


def free_port() -> int:
    """A TCP port free on this machine now (for a test's process group)."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_task(dtype: str = 'float64', epochs: int = 2, **kwargs):
    """A ClassificationTask on scikit-learn's digits with a 4-channel SmallCNN."""
    cfg = copy.deepcopy(DIGITS_TASK)
    cfg.update(epochs=epochs, dtype=dtype, **kwargs)
    return TASKS.build(cfg)


def digits_loop_cfg(work_dir: str | os.PathLike, *, al: dict | None = None,
                    task: dict | None = None, **top: Any) -> Config:
    """The config of a small active-learning run on the digits task.

    Defaults: :data:`DIGITS_TASK` (float32), ``SharpnessScorer`` with a ``VectorizedEngine`` of
    chunks of 50, ``TopKSelector``, ``SimulatedOracle``, no hooks,
    ``al=dict(num_rounds=2, budget=5, subset_size=40, initial_size=20)``, ``seed=0``.

    Args:
        work_dir: The run's work directory.
        al: Keys that replace those of the default ``al`` (others stay).
        task: Keys that replace those of the default task (``dataset=dict(...)`` replaces the
            whole dataset config; others stay).
        **top: Top-level keys that replace the default's (``scorer``, ``selector``,
            ``oracle``, ``hooks``, ``seed``, ...).

    Returns:
        A fresh ``mmengine.Config`` (nothing is shared between calls).
    """
    cfg = dict(
        task=copy.deepcopy(DIGITS_TASK),
        scorer=dict(type='SharpnessScorer', engine=dict(type='VectorizedEngine', chunk_size=50)),
        selector=dict(type='TopKSelector'),
        oracle=dict(type='SimulatedOracle'),
        hooks=[],
        al=dict(num_rounds=2, budget=5, subset_size=40, initial_size=20),
        seed=0,
        work_dir=str(work_dir))
    cfg['task'].update(copy.deepcopy(task or {}))
    cfg['al'].update(copy.deepcopy(al or {}))
    cfg.update(copy.deepcopy(top))
    return Config(cfg)


@pytest.fixture(scope='module')
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): tiny
    detection models gain nothing from a second thread, and two OpenMP threads slow down many
    times over when other processes share the two cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='module')
def digits_task():
    """A float64 digits task (``make_task()``), fresh for each test module: what one module
    does to it (annotations, patched methods) no other module sees. Building one is cheap."""
    return make_task()


@pytest.fixture(scope='session')
def _trained_cnn_once():
    """The trained model behind :func:`trained_cnn`, trained once per session on a task of its
    own (its annotations reach no test's task)."""
    task = make_task()
    ids = np.arange(200)
    task.set_annotations(task.ground_truth(ids))
    return task.train(task.build_model(seed=0), ids, seed=0).eval()


@pytest.fixture(scope='module')
def trained_cnn(_trained_cnn_once):
    """A float64 SmallCNN trained briefly on 200 labeled digits (non-trivial scores), in eval
    mode; a copy per test module, so a module that changes it changes no other module's."""
    return copy.deepcopy(_trained_cnn_once).eval()


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
