"""The visual report: one self-contained page per run and per query, checked image by image
(every embedded picture decodes), against the round files (picks in order, with their scores
and answers), and in headless Chromium where it is installed."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import digits_loop_cfg
from saal_tasks.engine import ActiveLearningLoop

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 6


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory) -> Path:
    work_dir = tmp_path_factory.mktemp('report') / 'w'
    cfg = digits_loop_cfg(work_dir, hooks=[dict(type='RunReportHook')],
                          al=dict(num_rounds=2, budget=BUDGET, subset_size=60),
                          task=dict(epochs=2))
    ActiveLearningLoop.from_cfg(cfg).run()
    return work_dir


def _images(page: str) -> list[Image.Image]:
    """Every embedded image of the page, decoded (a broken one raises)."""
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == page.count('<img'), 'every image is embedded'
    return [Image.open(io.BytesIO(base64.b64decode(u))).convert('RGB') for u in uris]


def _section(page: str, round_idx: int) -> str:
    start = page.index(f'<h2>Round {round_idx}</h2>')
    end = page.find('<h2>', start + 1)
    return page[start:end if end > 0 else len(page)]


def test_run_report_shows_each_round_s_picks_scores_and_answers(run_dir):
    page = (run_dir / 'report.html').read_text()
    assert 'http://' not in page and 'https://' not in page      # no network
    images = _images(page)
    # Curve, then per querying round a histogram, a class mix and BUDGET thumbnails.
    assert len(images) == 1 + 2 * (2 + BUDGET)
    assert page.index('<h2>Round 3</h2>') < page.index('<h2>Round 2</h2>') \
        < page.index('<h2>Round 1</h2>')                            # newest first
    assert 'no query in this round' in _section(page, 3)
    for r in (1, 2):
        folder = run_dir / 'rounds' / f'round_{r:03d}'
        picks = json.loads((folder / 'selected.json').read_text())['sample_ids']
        answers = json.loads((folder / 'annotations.json').read_text())
        with np.load(folder / 'scores.npz') as data:
            scores = dict(zip(data['sample_ids'].tolist(), data['scores'].tolist()))
        section = _section(page, r)
        captions = re.findall(r'<figcaption>(.*?)</figcaption>', section)
        assert len(captions) == BUDGET
        for rank, (sid, caption) in enumerate(zip(picks, captions), start=1):
            lines = caption.split('<br>')
            assert lines[0] == f'#{rank} · id {sid}'
            assert lines[1] == f'score {scores[sid]:.4g}'
            assert lines[2] == f'label {answers[str(sid)]}'
        assert f'{BUDGET} picked of 60 scored' in section
    # Thumbnails are the digits themselves: 8x8 enlarged 12x, grey (R = G = B).
    thumbs = [im for im in images if im.size == (96, 96)]
    assert len(thumbs) == 2 * BUDGET
    pixels = np.asarray(thumbs[0])
    assert (pixels[..., 0] == pixels[..., 1]).all() and pixels.std() > 0


def test_report_tool_redraws_the_same_rounds_and_ids_only(run_dir, tmp_path):
    copy = tmp_path / 'w'
    shutil.copytree(run_dir, copy)
    (copy / 'report.html').unlink()
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'report.py'), str(copy)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    drawn = (copy / 'report.html').read_text()
    hooked = (run_dir / 'report.html').read_text()
    for r in (1, 2, 3):
        assert _section(drawn, r) == _section(hooked, r)
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'report.py'), str(copy),
                           '--no-pictures'], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    bare = (copy / 'report.html').read_text()
    assert 'class="thumb' not in bare and bare.count('<figcaption>') == 2 * BUDGET


CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


@pytest.mark.skipif(CHROMIUM is None, reason='headless check needs Chromium '
                    '(apt-get install chromium); the page itself is checked above')
def test_report_loads_in_headless_chromium_and_a_broken_image_is_caught(run_dir, tmp_path):
    for name in ('report.html',):
        shutil.copy(run_dir / name, tmp_path / name)
    tool = [sys.executable, str(ROOT / 'tools' / 'report.py')]
    ok = subprocess.run([*tool, str(tmp_path), '--check'], capture_output=True, text=True,
                        cwd=ROOT, timeout=300)
    assert ok.returncode == 0 and 'every image loaded' in ok.stdout, ok.stdout + ok.stderr
    shot = Image.open(tmp_path / 'report.png')
    assert shot.size == (1400, 1000) and np.asarray(shot.convert('L')).std() > 5
    page = (tmp_path / 'report.html').read_text()
    (tmp_path / 'report.html').write_text(
        page.replace('base64,iVBOR', 'base64,XXXX', 2))
    bad = subprocess.run([*tool, str(tmp_path), '--check'], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert bad.returncode == 2 and '2 image(s) did not load' in bad.stderr, bad.stderr


def _page_pictures(gallery_html: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(u)))
            for u in re.findall(r'src="data:image/png;base64,([^"]+)"', gallery_html)]


def test_detection_pictures_draw_the_answered_boxes(tmp_path):
    pytest.importorskip('mmdet')
    import cv2
    from saal_tasks.hooks.report import gallery
    from saal_tasks.registry import TASKS
    from saal_tasks.tasks.detection.demo import write_voc_demo
    from test_detection import SPLITS, tiny_cfg
    root = tmp_path / 'VOCdevkit'
    write_voc_demo(root, splits=SPLITS, image_size=(96, 128), seed=3)
    task = TASKS.build(tiny_cfg(root).task)
    ids = task.sample_ids()[:3]
    answers = task.ground_truth(ids)
    drawn = task.preview(ids, answers)
    bare = task.preview(ids)
    for sid, picture, plain in zip(ids, drawn, bare):
        image = cv2.cvtColor(cv2.imread(task.pool.data_info(int(sid))['img_path']),
                             cv2.COLOR_BGR2RGB)
        assert picture.shape == image.shape and picture.dtype == np.uint8
        np.testing.assert_array_equal(plain, image)          # no answer: the image itself
        x1, y1, x2, y2 = (int(round(v)) for v in answers[int(sid)][0]['bbox'])
        changed = np.any(picture != image, axis=2)
        assert changed[y1:y2 + 1, x1].any() and changed[y1, x1:x2 + 1].any()   # its edges
        assert not changed[(y1 + y2) // 2, (x1 + x2) // 2]   # the box is drawn, not filled
    assert task.annotation_classes(answers[int(ids[0])]) == \
        [b['bbox_label'] for b in answers[int(ids[0])]]
    page = gallery(task, ids, np.zeros(3), answers)
    assert len(_page_pictures(page)) == 3 and 'label ' in page


def test_segmentation_pictures_colour_exactly_the_revealed_pixels(tmp_path):
    pytest.importorskip('mmseg')
    from saal_tasks.registry import TASKS
    from seg_helpers import tiny_seg_cfg, write_tiny_seg_data
    demo = write_tiny_seg_data(tmp_path / 'seg')
    task = TASKS.build(tiny_seg_cfg(demo, tmp_path / 'w').task)
    image, label = task.target.get(1)
    units = np.flatnonzero(label.reshape(-1) < 16)[::7][:40]
    answer = {'units': units, 'labels': label.reshape(-1)[units]}
    picture = task.preview(np.array([1]), {1: answer})[0]
    assert picture.shape == image.shape
    changed = np.any(picture != image, axis=2).reshape(-1)
    assert set(np.flatnonzero(changed)) <= set(units.tolist())   # nothing else is touched
    assert changed[units].mean() > 0.9                            # the revealed ones are
    np.testing.assert_array_equal(task.preview(np.array([1]))[0], image)
    # The classes of the answer, most pixels first, each once (captions and class mix).
    labels = answer['labels'].astype(np.int64)
    counts = np.bincount(labels, minlength=16)
    expected = sorted(set(labels.tolist()), key=lambda c: (-counts[c], c))
    assert task.annotation_classes(answer) == expected
    assert task.annotation_classes({'units': [0, 1, 2], 'labels': [255, 3, 3]}) == [3]


def test_learning_curve_axis_follows_the_annotation_kind(tmp_path):
    from types import SimpleNamespace
    from saal_tasks.core.build import build_checked
    from saal_tasks.core.errors import ConfigError
    hook = build_checked('AL_HOOKS', dict(type='LearningCurveHook',
                                          metric=['mIoU16', 'mIoU13']), 'hooks[0]')
    seg = [{'round': r, 'num_labeled': n, 'labeled_pixel_percent': p, 'mIoU16': m,
            'mIoU13': m + 5} for r, n, p, m in ((1, 0, 0.0, 20.0), (2, 60, 2.4, 40.0),
                                                (3, 60, 4.9, 45.0))]
    assert hook.axis(seg) == ('labeled_pixel_percent', 'labeled pixels (%)')
    cls = [{'round': 1, 'num_labeled': 20, 'accuracy': 0.5}]
    assert hook.axis(cls) == ('num_labeled', 'labeled samples')
    forced = build_checked('AL_HOOKS', dict(type='LearningCurveHook', metric='mIoU16',
                                            x_axis='samples'), 'hooks[0]')
    assert forced.axis(seg) == ('num_labeled', 'labeled samples')
    loop = SimpleNamespace(is_main=True, work_dir=tmp_path, run_name='seg')
    hook.after_run(loop, seg)
    assert (tmp_path / 'learning_curve.png').stat().st_size > 1000
    with pytest.raises(ConfigError, match="x_axis must be 'auto', 'samples' or 'pixels'"):
        build_checked('AL_HOOKS', dict(type='LearningCurveHook', x_axis='pixel'), 'hooks[0]')
