"""Segmentation trains through mmengine's Runner: the recipe it runs, resume inside a run,
the logs it writes, and the options the Runner owns (AMP, data workers)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg_helpers import SIZE, tiny_seg_cfg, write_tiny_seg_data

pytest.importorskip('mmseg')

from saal_tasks.core.errors import ConfigError  # noqa: E402
from saal_tasks.registry import TASKS  # noqa: E402


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    return write_tiny_seg_data(tmp_path_factory.mktemp('seg_runner_data'))


def _task(demo_root, tmp_path, **options):
    cfg = tiny_seg_cfg(demo_root, tmp_path)
    cfg.task.update(options)
    task = TASKS.build(cfg.task)
    # Reveal every pixel of two target images, so the target term takes part.
    pixels = np.arange(SIZE[0] * SIZE[1])
    task.set_annotations({i: task.restrict_annotation(task.ground_truth([i])[i], pixels)
                          for i in (0, 1)})
    return task


def _reference_run(task, model, windows, total):
    """The recipe written out by hand over consecutive windows ``(seed, start, stop)``: SGD
    with two groups (head at lr * head_lr_mult), the closed-form poly schedule, each window's
    draws, source CE + target CE."""
    from saal_tasks.tasks.segmentation.data import load_batch
    from saal_tasks.tasks.segmentation.iterations import draw_window
    from saal_tasks.tasks.segmentation.models import segment_logits
    rec = task.trainer
    head = list(model.decode_head.parameters())
    rest = [p for p in model.parameters() if all(p is not h for h in head)]
    optimizer = torch.optim.SGD([dict(params=rest, lr=rec.lr),
                                 dict(params=head, lr=rec.lr * rec.head_lr_mult)],
                                lr=rec.lr, momentum=rec.momentum,
                                weight_decay=rec.weight_decay)
    model.train()
    for seed, start, stop in windows:
        draws = draw_window(seed, start, stop, len(task.source), len(task.target),
                            rec.batch_size, rec.target_batch_size, rec.flip)
        for it, (src, src_flips, tgt, tgt_flips) in zip(range(start, stop), draws):
            factor = (1 - it / total) ** rec.poly_power
            for group, base in zip(optimizer.param_groups,
                                   (rec.lr, rec.lr * rec.head_lr_mult)):
                group['lr'] = base * factor
            x_s, y_s = load_batch(task.source, src, src_flips)
            x_t, y_t = load_batch(task.target, tgt, tgt_flips, task.labels)
            loss = F.cross_entropy(segment_logits(model, x_s), y_s, ignore_index=255)
            if (y_t != 255).any():
                loss = loss + F.cross_entropy(segment_logits(model, x_t), y_t,
                                              ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model


def _saved(tmp_path, state):
    """``state`` after a round trip through a file, as the loop stores it."""
    path = tmp_path / 'optim.pth'
    torch.save(state, path)
    return torch.load(path, weights_only=True)


def _fresh_copy(task, model):
    copy = task.build_model(0)
    copy.load_state_dict(model.state_dict())
    return copy


def test_runner_trains_the_recipe_across_windows(demo_root, tmp_path):
    """Two windows through the Runner (mmengine's OptimWrapper, paramwise_cfg, PolyLR), the
    second resumed from the saved state into a fresh model, train what the recipe says over
    the whole run, to float32 rounding of mmengine's chained poly factors."""
    task = _task(demo_root, tmp_path, head_lr_mult=10.0)
    first, state = task.train_steps(task.build_model(0), [0, 1], 5, 0, 3, 10, None)
    ours, _ = task.train_steps(_fresh_copy(task, first), [0, 1], 6, 3, 6, 10,
                               _saved(tmp_path, state))
    ref = _reference_run(task, task.build_model(0), [(5, 0, 3), (6, 3, 6)], total=10)
    start = task.build_model(0).state_dict()
    moved = 0
    for name, value in ref.state_dict().items():
        got = ours.state_dict()[name]
        if value.dtype.is_floating_point:
            torch.testing.assert_close(got, value, rtol=1e-4, atol=1e-6)
            moved += int(not torch.equal(value, start[name]))
        else:
            assert torch.equal(got, value), name
    assert moved > 20, 'training changed the weights (the Runner did not re-initialise them)'


def test_a_restarted_window_is_bit_identical(demo_root, tmp_path):
    """A window restarted from the files of its start (a crash inside it) ends exactly where
    the uninterrupted one ends: weights, momentum buffers and scheduler steps."""
    task = _task(demo_root, tmp_path)
    first, state = task.train_steps(task.build_model(0), [0, 1], 7, 0, 4, 8, None)
    restart_from = (_fresh_copy(task, first), _saved(tmp_path, state))
    straight, straight_state = task.train_steps(first, [0, 1], 9, 4, 8, 8, state)
    again, again_state = task.train_steps(*restart_from[:1], [0, 1], 9, 4, 8, 8,
                                          restart_from[1])
    for name, value in straight.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), name
    assert [s['last_step'] for s in again_state['param_schedulers']] == \
        [s['last_step'] for s in straight_state['param_schedulers']] == [8]
    for key, value in straight_state['optimizer']['state'].items():
        assert torch.equal(again_state['optimizer']['state'][key]['momentum_buffer'],
                           value['momentum_buffer'])


def test_runner_logs_progress_and_scalars(demo_root, tmp_path, capsys):
    """The run's log gets one progress line per interval (terms, lr, rate, time left); the
    visualizer's backend writes the scalars under the round's log folder."""
    from mmengine.logging import MMLogger
    task = _task(demo_root, tmp_path, log_interval=2)
    task.use_log_dir(tmp_path / 'train_logs')
    MMLogger.get_instance('seg_runner_test', log_level='INFO')  # the run's logger
    task.train_steps(task.build_model(0), [0, 1], 3, 0, 4, 10, None)
    lines = [line.split(' - INFO - ')[1] for line in capsys.readouterr().out.splitlines()
             if ' - INFO - iter ' in line]
    assert [line.split(':')[0] for line in lines] == ['iter 2/10', 'iter 4/10']
    assert 'loss_src' in lines[0] and 'loss_tgt' in lines[0] and 'it/s' in lines[0]
    assert 'left)' in lines[0] and 'left' not in lines[1]  # the window's end has no ETA
    scalars = list((tmp_path / 'train_logs').rglob('scalars.json'))
    assert len(scalars) == 1
    rows = [json.loads(line) for line in scalars[0].read_text().splitlines()]
    assert [r['iter'] for r in rows] == [2, 4]
    assert all({'loss', 'loss_src', 'lr'} <= set(r) and r['loss'] > 0 for r in rows)


def test_data_workers_load_the_same_batches(demo_root, tmp_path):
    task = _task(demo_root, tmp_path)
    inline, _ = task.train_steps(task.build_model(0), [0, 1], 2, 0, 3, 3, None)
    task = _task(demo_root, tmp_path, num_workers=2)
    workers, _ = task.train_steps(task.build_model(0), [0, 1], 2, 0, 3, 3, None)
    for name, value in inline.state_dict().items():
        assert torch.equal(workers.state_dict()[name], value), name


@pytest.mark.skipif(torch.cuda.is_available(), reason='AMP runs where CUDA is')
def test_amp_without_cuda_is_refused_at_build(demo_root, tmp_path):
    with pytest.raises(ConfigError, match=r'task\.amp=True needs a CUDA device'):
        _task(demo_root, tmp_path, amp=True)


def test_recipe_becomes_mmengine_configs(demo_root, tmp_path):
    task = _task(demo_root, tmp_path, lr=0.02, head_lr_mult=10.0, poly_power=0.9)
    wrapper = task.trainer.optim_wrapper_cfg()
    assert wrapper['type'] == 'OptimWrapper'
    assert wrapper['optimizer'] == dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=5e-4)
    assert wrapper['paramwise_cfg'] == dict(custom_keys={'decode_head': dict(lr_mult=10.0)})
    assert task.trainer.param_scheduler_cfg(62500) == [dict(
        type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=62501, by_epoch=False)]
    with pytest.raises(ConfigError, match='task.num_workers'):
        _task(demo_root, tmp_path, num_workers=-1)


def test_frozen_batch_norms_stay_frozen_in_training(demo_root, tmp_path, capsys):
    """RIPU's FREEZE_BN through the Runner: DeepLab-v2's backbone batch norms keep their
    ImageNet statistics and affine; everything else trains; the log is not flooded with one
    line per frozen parameter."""
    task = _task(demo_root, tmp_path, model=dict(arch='deeplab_v2', freeze_bn=True),
                 batch_size=1, target_batch_size=1)
    model = task.build_model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, _ = task.train_steps(model, [0, 1], 1, 0, 2, 10, None)
    norms = {name for name, m in model.backbone.named_modules()
             if isinstance(m, torch.nn.BatchNorm2d)}
    assert norms
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    frozen = {k for k in before if k.startswith('backbone.')
              and k.removeprefix('backbone.').rsplit('.', 1)[0] in norms}
    assert frozen and not changed & frozen
    assert 'decode_head.branches.0.weight' in changed and 'backbone.conv1.weight' in changed
    assert 'requires_grad=False' not in capsys.readouterr().out


def _first_batch(task, seed=4):
    """Iteration 0's batches as the Runner's loader gives them."""
    from saal_tasks.tasks.segmentation.iterations import IterationBatches, draw_window
    rec = task.trainer
    draws = draw_window(seed, 0, 1, len(task.source), len(task.target), rec.batch_size,
                        rec.target_batch_size, rec.flip)
    return IterationBatches(task.source, task.target, task.labels, draws,
                            pipeline=rec.pipeline, seed=seed)[0], draws[0]


def test_train_pipeline_runs_mmseg_transforms(demo_root, tmp_path):
    """A pipeline of mmcv's RandomFlip(prob=1) flips exactly what the task's own flips
    flip; mmseg's RandomCrop gives batches of the crop size, labels cut with the images."""
    plain = _task(demo_root, tmp_path, flip=False)
    flipped = _task(demo_root, tmp_path, flip=False,
                    train_pipeline=[dict(type='RandomFlip', prob=1.0)])
    (batch, draws), (ref, _) = _first_batch(flipped), _first_batch(plain)
    for x, y, xr, yr in ((batch['x_s'], batch['y_s'], ref['x_s'], ref['y_s']),
                         (batch['x_t'], batch['y_t'], ref['x_t'], ref['y_t'])):
        assert torch.equal(x, xr.flip(-1)) and torch.equal(y, yr.flip(-1))
    cropped = _task(demo_root, tmp_path, flip=False,
                    train_pipeline=[dict(type='RandomCrop', crop_size=(16, 24))])
    batch, _ = _first_batch(cropped)
    assert batch['x_s'].shape[-2:] == batch['y_s'].shape[-2:] == (16, 24)
    # Every crop is a window of the uncropped sample, image and labels at the same place.
    for x, y, xr, yr in zip(batch['x_s'], batch['y_s'], ref['x_s'], ref['y_s']):
        hits = [(i, j) for i in range(SIZE[0] - 16 + 1) for j in range(SIZE[1] - 24 + 1)
                if torch.equal(xr[:, i:i + 16, j:j + 24], x)]
        assert hits and any(torch.equal(yr[i:i + 16, j:j + 24], y) for i, j in hits)


def test_train_pipeline_is_seeded_per_sample(demo_root, tmp_path):
    """Augmentation depends on (seed, iteration, sample) only: the same with data workers as
    without, different for another seed, and the caller's global generators untouched."""
    pipeline = [dict(type='RandomCrop', crop_size=(16, 24)), dict(type='RandomFlip', prob=0.5),
                dict(type='PhotoMetricDistortion')]
    task = _task(demo_root, tmp_path, train_pipeline=pipeline)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    one, _ = _first_batch(task, seed=4)
    assert np.array_equal(np.random.get_state()[1], state)
    again, _ = _first_batch(task, seed=4)
    other, _ = _first_batch(task, seed=5)
    assert all(torch.equal(one[k], again[k]) for k in one)
    assert not torch.equal(one['x_s'], other['x_s'])
    inline, _ = task.train_steps(task.build_model(0), [0, 1], 2, 0, 3, 3, None)
    task = _task(demo_root, tmp_path, train_pipeline=pipeline, num_workers=2)
    workers, _ = task.train_steps(task.build_model(0), [0, 1], 2, 0, 3, 3, None)
    for name, value in inline.state_dict().items():
        assert torch.equal(workers.state_dict()[name], value), name


@pytest.mark.parametrize('pipeline, message', [
    ([dict(type='LoadImageFromFile')], r'train_pipeline\[0\] is LoadImageFromFile'),
    ([dict(type='RandomFlip', prob=0.5), dict(type='NoSuchTransform')],
     r"train_pipeline\[1\]: 'NoSuchTransform' is not an mmseg or mmcv transform"),
    ([dict(prob=0.5)], r'train_pipeline\[0\] must be a dict with a type'),
    (dict(type='RandomFlip'), 'must be a list of transform configs'),
])
def test_bad_train_pipelines_are_refused(demo_root, tmp_path, pipeline, message):
    with pytest.raises(ConfigError, match=message):
        _task(demo_root, tmp_path, train_pipeline=pipeline)


def test_pipeline_of_varying_sizes_is_refused_with_the_fix(demo_root, tmp_path):
    task = _task(demo_root, tmp_path, train_pipeline=[
        dict(type='RandomResize', scale=(64, 32), ratio_range=(0.5, 2.0), keep_ratio=True)])
    with pytest.raises(ConfigError, match='end it with a fixed size'):
        _first_batch(task)


def test_optim_wrapper_and_param_scheduler_from_config(demo_root, tmp_path):
    """mmengine configs given as task options replace the recipe's: AdamW's state is what the
    window saves, and a LinearLR without end runs over the whole run."""
    task = _task(demo_root, tmp_path, optim_wrapper=dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01),
        paramwise_cfg=dict(custom_keys={'decode_head': dict(lr_mult=2.0)})),
        param_scheduler=dict(type='LinearLR', start_factor=1.0, end_factor=0.0))
    assert task.trainer.param_scheduler_cfg(10) == [dict(
        type='LinearLR', start_factor=1.0, end_factor=0.0, by_epoch=False, end=11)]
    _, state = task.train_steps(task.build_model(0), [0, 1], 1, 0, 4, 10, None)
    groups = state['optimizer']['param_groups']
    # LinearLR over total_iters = end - begin - 1 = 10: factor 1 - 4/10 after 4 iterations.
    assert sorted({round(g['lr'], 12) for g in groups}) == pytest.approx([6e-4, 1.2e-3])
    assert all('exp_avg' in v for v in state['optimizer']['state'].values())
    with pytest.raises(ConfigError, match='set its type=.AmpOptimWrapper. instead'):
        _task(demo_root, tmp_path, amp=True, optim_wrapper=dict(
            type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1)))
    with pytest.raises(ConfigError, match='by_epoch=True'):
        _task(demo_root, tmp_path, param_scheduler=[dict(type='PolyLR', by_epoch=True)])
    with pytest.raises(ConfigError, match='task.optim_wrapper must be'):
        _task(demo_root, tmp_path, optim_wrapper=dict(type='OptimWrapper'))
