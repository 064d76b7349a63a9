"""End to end: RI-SAAL on generated SYNTHIA/Cityscapes-layout data, in-run schedule, resume.

One tiny run (two selections inside one training run) is compared with the same run stopped
after a recorded stage and resumed twice: every persisted output must be identical.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from saal_tasks.engine import ActiveLearningLoop
from saal_tasks.core.errors import AnnotationError, ConfigError

pytest.importorskip('mmseg')
from seg_helpers import ROOT, SIZE, tiny_seg_cfg, write_tiny_seg_data  # noqa: E402



@pytest.fixture(scope='module')
def demo_root(tmp_path_factory) -> Path:
    return write_tiny_seg_data(tmp_path_factory.mktemp('seg_demo'))


def _cfg(demo_root: Path, work_dir: Path, **al) -> Config:
    cfg = tiny_seg_cfg(demo_root, work_dir)
    for key, value in al.items():
        cfg.al[key] = value
    return cfg


def _stop_after(loop: ActiveLearningLoop, round_idx: int, stage: str) -> None:
    """Make ``loop`` raise right after it recorded ``stage`` of ``round_idx``."""
    mark = loop.store.mark

    def marking(r, name, seconds=None):
        mark(r, name, seconds)
        if (r, name) == (round_idx, stage):
            raise KeyboardInterrupt(f'stopped after {name} of round {r}')
    loop.store.mark = marking


def _outputs(work_dir: Path) -> dict[str, bytes]:
    """Every persisted result of a run, keyed by relative path (timings removed; the
    Runner's timestamped training logs are logs, not results)."""
    out = {}
    for path in sorted(work_dir.rglob('*')):
        rel = str(path.relative_to(work_dir))
        if path.suffix in ('.json', '.npz', '.pth') and rel != 'manifest.json' \
                and 'train_logs' not in path.parts:
            out[rel] = path.read_bytes()
    records = [json.loads(line) for line in (work_dir / 'metrics.jsonl').read_text().split('\n')
               if line]
    out['metrics'] = json.dumps([{k: v for k, v in r.items() if not k.endswith('_s')}
                                 for r in records], sort_keys=True).encode()
    return out


@pytest.fixture(scope='module')
def reference(demo_root, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('seg_ref')
    loop = ActiveLearningLoop.from_cfg(_cfg(demo_root, work_dir))
    records = loop.run()
    return work_dir, loop, records


def test_two_selections_in_one_run(reference):
    work_dir, loop, records = reference
    assert [r['round'] for r in records] == [1, 2, 3]
    # Round 1 trains on the source only; every round reports mIoU over 16 and 13 classes.
    assert records[0]['labeled_pixels'] == 0
    assert all(0 <= r['mIoU16'] <= 100 and 'mIoU13' in r and 'IoU.road' in r for r in records)
    # Each selection adds pixels, never more than the per-image round budget: RIPU's
    # ceil(H * W * 5 % / 2 rounds / 9) regions of 3 x 3.
    assert loop.selector.round_regions(SIZE) == math.ceil(SIZE[0] * SIZE[1] * 0.025 / 9)
    per_round = loop.selector.round_budget(SIZE)
    assert per_round == 9 * loop.selector.round_regions(SIZE)
    pixels = [r['labeled_pixels'] for r in records]
    assert pixels[0] < pixels[1] < pixels[2] <= 2 * per_round * 6
    for r in (1, 2):
        selected = json.loads((work_dir / f'rounds/round_{r:03d}/selected.json').read_text())
        assert all(0 < len(u) <= per_round for u in selected['units'])
        assert selected['num_units'] == records[r]['labeled_pixels'] - records[r - 1][
            'labeled_pixels']
    # Iteration windows continue one run: the Runner's optimizer and scheduler state is saved
    # with every round.
    for r, stop in zip((1, 2, 3), (6, 9, 12)):
        state = torch.load(work_dir / f'rounds/round_{r:03d}/optim.pth', weights_only=True)
        assert state['optimizer']['state'], 'momentum buffers are part of the saved state'
        assert [s['last_step'] for s in state['param_schedulers']] == [stop]


def test_revealed_labels_are_the_ground_truth_of_the_chosen_pixels(reference):
    work_dir, loop, _ = reference
    task = loop.task
    for r in (1, 2):
        selected = json.loads((work_dir / f'rounds/round_{r:03d}/selected.json').read_text())
        stored = json.loads((work_dir / f'rounds/round_{r:03d}/annotations.json').read_text())
        for sample_id, units in zip(selected['sample_ids'], selected['units']):
            answer = task.decode_annotation(stored[str(sample_id)])
            assert np.array_equal(answer['units'], units)
            truth = task.ground_truth(np.array([sample_id]))[sample_id].reshape(-1)
            assert np.array_equal(answer['labels'], truth[units])
    # The training targets hold exactly the revealed pixels.
    for sample_id in task.sample_ids():
        revealed = task.labels.revealed(int(sample_id))
        targets = task.labels.targets(int(sample_id))
        truth = task.ground_truth(np.array([sample_id]))[int(sample_id)].reshape(-1)
        assert np.array_equal(targets[revealed], truth[revealed])
        assert (targets[~revealed] == 255).all()


@pytest.mark.parametrize('stops', [[(1, 'score'), (2, 'select')], [(1, 'commit')]])
def test_resumed_run_equals_uninterrupted(demo_root, reference, tmp_path, stops):
    ref_dir, _, ref_records = reference
    for round_idx, stage in stops:
        loop = ActiveLearningLoop.from_cfg(_cfg(demo_root, tmp_path))
        _stop_after(loop, round_idx, stage)
        with pytest.raises(KeyboardInterrupt):
            loop.run(resume=(tmp_path / 'manifest.json').exists())
    records = ActiveLearningLoop.from_cfg(_cfg(demo_root, tmp_path)).run(resume=True)
    assert [r['mIoU16'] for r in records] == [r['mIoU16'] for r in ref_records]
    assert _outputs(tmp_path) == _outputs(ref_dir)


def test_unit_selector_and_partial_task_must_match(demo_root, tmp_path):
    cfg = _cfg(demo_root, tmp_path)
    cfg.selector = dict(type='TopKSelector')
    with pytest.raises(ConfigError, match='annotates parts of samples'):
        ActiveLearningLoop.from_cfg(cfg)
    cfg = _cfg(demo_root, tmp_path, budget=5)
    with pytest.raises(ConfigError, match='al.budget'):
        ActiveLearningLoop.from_cfg(cfg)
    cfg = _cfg(demo_root, tmp_path, schedule=dict(type='InRunSchedule', round_iters=[6, 9]))
    with pytest.raises(ConfigError, match='round_iters'):
        ActiveLearningLoop.from_cfg(cfg)


def test_bad_pixel_annotations_are_refused(demo_root, tmp_path):
    loop = ActiveLearningLoop.from_cfg(_cfg(demo_root, tmp_path))
    task = loop.task
    good = {'units': np.array([0, 5]), 'labels': np.array([2, 255], np.uint8)}
    task.validate_annotations({0: good})
    bad = [({'units': np.array([0, 0]), 'labels': np.array([1, 1], np.uint8)}, 'twice'),
           ({'units': np.array([SIZE[0] * SIZE[1]]), 'labels': np.array([1], np.uint8)},
            'pixel indices'),
           ({'units': np.array([1]), 'labels': np.array([16], np.uint8)}, 'train ids'),
           ({'units': np.array([1, 2]), 'labels': np.array([1], np.uint8)}, 'one length')]
    for annotation, message in bad:
        with pytest.raises(AnnotationError, match=message):
            task.validate_annotations({0: annotation})
    with pytest.raises(AnnotationError, match='not a target image'):
        task.validate_annotations({99: good})
    # The persisted form round-trips exactly.
    back = task.decode_annotation(json.loads(json.dumps(task.encode_annotation(good))))
    assert np.array_equal(back['units'], good['units'])
    assert np.array_equal(back['labels'], good['labels'])


def test_missing_dataset_names_paths_and_demo(tmp_path):
    cfg = Config.fromfile(ROOT / 'configs/seg/ri_saal_synthia.py')
    cfg.work_dir = str(tmp_path)
    cfg.task.source.data_root = str(tmp_path / 'nowhere/RAND_CITYSCAPES')
    with pytest.raises(ConfigError) as err:
        ActiveLearningLoop.from_cfg(cfg)
    text = str(err.value)
    assert 'nowhere/RAND_CITYSCAPES' in text and 'demo' in text and '\n' not in text


def test_metrics_file_is_strict_json(reference):
    """Absent classes have NaN IoU; metrics.jsonl writes them as null (strict JSON), and the
    loop's own records keep NaN."""
    work_dir, _, records = reference

    def refuse(constant):
        raise AssertionError(f'metrics.jsonl holds {constant}: not strict JSON')
    written = [json.loads(line, parse_constant=refuse)
               for line in (work_dir / 'metrics.jsonl').read_text().splitlines()]
    absent = [k for k, v in records[0].items() if isinstance(v, float) and math.isnan(v)]
    assert absent, 'the tiny val set lacks some classes'
    assert all(written[0][k] is None for k in absent)
    from saal_tasks.engine.store import MetricsLog
    decoded = MetricsLog.decode((work_dir / 'metrics.jsonl').read_text())
    assert all(math.isnan(decoded[0][k]) for k in absent)


def test_chunked_rounds_select_what_one_call_selects(demo_root, tmp_path, reference):
    """Scoring and selecting two images at a time (maps dropped after each chunk) gives the
    selections, answers and metrics of scoring every candidate in one call (maps kept in
    scores.npz), for RI-SAAL and for the random baseline, whose maps come from a key drawn
    from the round's generator."""
    for scorer in (None, dict(type='RandomPixelScorer')):
        runs = {}
        for chunk in (2, None):
            work_dir = tmp_path / f'{scorer is None}_{chunk}'
            cfg = _cfg(demo_root, work_dir, unit_chunk=chunk)
            if scorer is not None:
                cfg.scorer = scorer
            ActiveLearningLoop.from_cfg(cfg).run()
            runs[chunk] = work_dir
        streamed, whole = (_outputs(runs[c]) for c in (2, None))
        for r in (1, 2):
            name = f'rounds/round_{r:03d}/'
            for file in ('selected.json', 'annotations.json', 'metrics.json'):
                assert streamed[name + file] == whole[name + file], name + file
            with np.load(runs[2] / name / 'scores.npz') as a, \
                    np.load(runs[None] / name / 'scores.npz') as b:
                assert not any(k.startswith('units_') for k in a.files)
                assert sum(k.startswith('units_') for k in b.files) == 6
                np.testing.assert_array_equal(a['scores'], b['scores'])
                np.testing.assert_array_equal(a['sample_ids'], b['sample_ids'])
        assert streamed['metrics'] == whole['metrics']
