"""Segmentation data: id mappings, label conversion, datasets, layout checks, metrics, demo data."""
from __future__ import annotations

import importlib.util
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip('cv2')
pytest.importorskip('mmseg')

from saal_tasks.core.errors import ConfigError  # noqa: E402
from saal_tasks.tasks.segmentation import convert  # noqa: E402
from saal_tasks.tasks.segmentation.classes import (  # noqa: E402
    CITYSCAPES_TO_TRAIN, CLASSES13_INDICES, CLASSES16, SYNTHIA_TO_TRAIN, cityscapes_to_train,
    synthia_to_train)
from saal_tasks.tasks.segmentation.convert import convert_labels, convert_synthia_file  # noqa: E402
from saal_tasks.tasks.segmentation.data import (  # noqa: E402
    Cityscapes16Dataset, SynthiaDataset, build_seg_dataset, check_layout, read_sample,
    sample_names)
from saal_tasks.tasks.segmentation.demo import (  # noqa: E402
    DEMO_CLASS_IDS, MARKER, write_seg_demo)
from saal_tasks.tasks.segmentation.metrics import (  # noqa: E402
    SegmentationMeter, metrics_from_confusion)

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(num_source=6, num_target_train=4, num_target_val=3, size=(32, 64))


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rgb16_png(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB PNG written without OpenCV: channels in the file's own (R, G, B) order."""
    height, width, _ = rgb.shape
    rows = b''.join(b'\x00' + rgb[y].astype('>u2').tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack('>IIBBBBB', width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
                     + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


# ---------------------------------------------------------------------------- id mappings

def test_every_synthia_id_maps_to_its_train_id_and_others_to_ignore():
    ids = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    out = synthia_to_train(ids)
    assert out.dtype == np.uint8 and out.shape == (256, 256)
    expected = np.full(1 << 16, 255, dtype=np.uint8)
    for raw, train in SYNTHIA_TO_TRAIN.items():
        expected[raw] = train
    np.testing.assert_array_equal(out.ravel(), expected)
    assert sorted(SYNTHIA_TO_TRAIN.values()) == list(range(16))
    # [H, W, 3] as cv2 reads it: the class id is channel 2 (red), the others are ignored.
    bgr = np.stack([np.full_like(ids, 7), np.full_like(ids, 300), ids], axis=-1)
    np.testing.assert_array_equal(synthia_to_train(bgr), out)
    np.testing.assert_array_equal(synthia_to_train(bgr[..., ::-1], class_channel=0), out)
    # Ids outside the table (other integer dtypes) are ignored, not wrapped around.
    np.testing.assert_array_equal(synthia_to_train(np.array([[3, -3, 65539]])), [[0, 255, 255]])


def test_every_cityscapes_label_id_maps_to_its_train_id_and_others_to_ignore():
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = cityscapes_to_train(ids).ravel()
    for raw in range(256):
        assert out[raw] == CITYSCAPES_TO_TRAIN.get(raw, 255)
    assert sorted(CITYSCAPES_TO_TRAIN.values()) == list(range(16))
    assert out[1] == 255 and out[7] == 0 and out[33] == 15   # ego vehicle, road, bicycle
    with pytest.raises(ValueError, match='labelIds'):
        cityscapes_to_train(np.zeros((4, 4, 3), np.uint8))


def test_classes13_leave_out_wall_fence_pole():
    assert len(CLASSES13_INDICES) == 13
    assert {CLASSES16[i] for i in set(range(16)) - set(CLASSES13_INDICES)} == {
        'wall', 'fence', 'pole'}


def test_synthia_16bit_png_converts_with_class_id_in_red(tmp_path):
    rng = np.random.default_rng(0)
    classes = rng.choice(list(SYNTHIA_TO_TRAIN) + [0, 13, 22, 300], size=(5, 7)).astype(np.uint16)
    # Green/blue hold instance-like values that are valid class ids themselves: reading the
    # wrong channel gives a different answer.
    rgb = np.stack([classes, np.full_like(classes, 8), np.full_like(classes, 3)], axis=-1)
    src = tmp_path / 'raw.png'
    _rgb16_png(src, rgb)
    read = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    assert read.dtype == np.uint16 and read.shape == (5, 7, 3)
    np.testing.assert_array_equal(read[..., 2], classes)      # cv2: BGR, red last
    assert convert_synthia_file(src, tmp_path / 'out.png') is True
    out = cv2.imread(str(tmp_path / 'out.png'), cv2.IMREAD_UNCHANGED)
    expected = np.vectorize(lambda c: SYNTHIA_TO_TRAIN.get(int(c), 255))(classes)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    # A round trip through cv2.imwrite agrees with the independently written file.
    cv2.imwrite(str(tmp_path / 'cv2.png'), read)
    np.testing.assert_array_equal(
        synthia_to_train(cv2.imread(str(tmp_path / 'cv2.png'), cv2.IMREAD_UNCHANGED)), expected)


# ---------------------------------------------------------------------------- metrics

def _hand_confusion() -> np.ndarray:
    confusion = np.zeros((16, 16), dtype=np.int64)
    confusion[0, 0], confusion[0, 3] = 30, 10    # road: 30 right, 10 called wall
    confusion[3, 3] = 10                         # wall
    confusion[9, 9], confusion[9, 12] = 40, 5    # sky: 5 called car (car never labelled)
    return confusion


# Worked out by hand from _hand_confusion: road 30/(40+30-30), wall 10/(10+20-10),
# sky 40/(45+40-40), car 0/(0+5-0); every other class is absent (NaN).
HAND = {'IoU.road': 75.0, 'IoU.wall': 50.0, 'IoU.sky': 100 * 40 / 45, 'IoU.car': 0.0,
        'mIoU16': (75 + 50 + 100 * 40 / 45 + 0) / 4, 'mIoU13': (75 + 100 * 40 / 45 + 0) / 3,
        'aAcc': 100 * 80 / 95}


def test_metrics_from_confusion_known_numbers():
    out = metrics_from_confusion(_hand_confusion())
    for key, value in HAND.items():
        assert out[key] == pytest.approx(value, abs=1e-9), key
    assert set(out) == {'mIoU16', 'mIoU13', 'aAcc'} | {f'IoU.{c}' for c in CLASSES16}
    absent = [c for c in CLASSES16 if c not in ('road', 'wall', 'sky', 'car')]
    assert all(np.isnan(out[f'IoU.{c}']) for c in absent)
    # Three classes, custom names and subset.
    small = metrics_from_confusion(np.array([[3, 1, 0], [0, 2, 2], [0, 0, 0]]), ('a', 'b', 'c'),
                                   subset13=(0, 1))
    assert small == pytest.approx({'mIoU3': (75 + 40 + 0) / 3, 'mIoU2': 57.5, 'aAcc': 62.5,
                                   'IoU.a': 75.0, 'IoU.b': 40.0, 'IoU.c': 0.0})


def _maps_of(confusion: np.ndarray, ignored: int, rng: np.random.Generator):
    labels, preds = [], []
    for gt, pred in zip(*np.nonzero(confusion)):
        labels += [gt] * confusion[gt, pred]
        preds += [pred] * confusion[gt, pred]
    labels += [255] * ignored
    preds += list(rng.integers(0, 16, ignored))      # whatever is predicted there never counts
    order = rng.permutation(len(labels))
    return (torch.tensor(np.array(preds)[order]), torch.tensor(np.array(labels)[order]))


def test_segmentation_meter_matches_confusion_and_hand_numbers():
    rng = np.random.default_rng(0)
    pred, label = _maps_of(_hand_confusion(), ignored=25, rng=rng)    # 95 + 25 = 120 pixels
    batch = SegmentationMeter()
    batch.add(pred.view(2, 6, 10), label.view(2, 6, 10))
    single = SegmentationMeter()
    for p, l in zip(pred.view(2, 6, 10), label.view(2, 6, 10)):
        single.add(p, l)
    expected = metrics_from_confusion(_hand_confusion())
    for meter in (batch, single):
        out = meter.compute()
        assert out.keys() == expected.keys()
        for key, value in expected.items():
            assert out[key] == pytest.approx(value, nan_ok=True), key
        for key, value in HAND.items():
            assert out[key] == pytest.approx(value), key
    batch.reset()
    assert np.isnan(batch.compute()['mIoU16'])


def test_segmentation_meter_rejects_bad_input():
    meter = SegmentationMeter()
    with pytest.raises(ValueError, match='same shape'):
        meter.add(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='0..15 or 255'):
        meter.add(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 19))
    with pytest.raises(ValueError, match='argmax'):
        meter.add(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))


# ---------------------------------------------------------------------------- demo data

@pytest.fixture(scope='module')
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('seg_demo')
    write_seg_demo(root, seed=0, **SMALL)
    return root


def _all_samples(dataset):
    return [read_sample(dataset, i) for i in range(len(dataset))]


def test_demo_layouts_read_by_the_datasets(demo):
    source = build_seg_dataset('synthia', demo / 'synthia')
    train = build_seg_dataset('cityscapes', demo / 'cityscapes', 'train')
    val = build_seg_dataset('cityscapes', demo / 'cityscapes', 'val')
    assert isinstance(source, SynthiaDataset) and isinstance(train, Cityscapes16Dataset)
    assert (len(source), len(train), len(val)) == (6, 4, 3)
    assert source.metainfo['classes'] == CLASSES16 and len(source.metainfo['palette']) == 16
    assert sample_names(source) == [f'{i:07d}' for i in range(6)]
    assert sample_names(val) == [f'democity_{i:06d}_000019' for i in (4, 5, 6)]
    seen: set[int] = set()
    for dataset in (source, train, val):
        for image, label in _all_samples(dataset):
            assert image.shape == (32, 64, 3) and image.dtype == np.uint8
            assert label.shape == (32, 64) and label.dtype == np.uint8
            values = set(np.unique(label).tolist())
            assert values <= set(DEMO_CLASS_IDS) | {255}
            seen |= values
    assert seen >= {0, 1, 2, 8, 9, 12}       # road, sidewalk, building, vegetation, sky, car
    # Ignored regions: SYNTHIA lane markings (id 22) and the Cityscapes ego vehicle (id 1).
    assert any((label == 255).any() for _, label in _all_samples(source))
    assert all((label[-1] == 255).all() for _, label in _all_samples(val))
    # The raw SYNTHIA label: 16-bit, 3 channels, class ids in red (cv2 index 2), others zero.
    raw = cv2.imread(str(demo / 'synthia/GT/LABELS/0000000.png'), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (32, 64, 3)
    assert not raw[..., :2].any() and set(np.unique(raw[..., 2])) <= set(SYNTHIA_TO_TRAIN) | {22}
    np.testing.assert_array_equal(synthia_to_train(raw), read_sample(source, 0)[1])


def test_demo_read_through_mmseg_pipeline_and_registry(demo):
    from mmseg.registry import DATASETS

    dataset = DATASETS.build(dict(
        type='Cityscapes16Dataset', data_root=str(demo / 'cityscapes'),
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=[dict(type='mmseg.LoadImageFromFile'), dict(type='mmseg.LoadAnnotations')]))
    sample = dataset[1]
    image, label = read_sample(dataset, 1)
    np.testing.assert_array_equal(sample['gt_seg_map'], label)
    np.testing.assert_array_equal(sample['img'][..., ::-1], image)     # mmseg keeps BGR


def test_demo_is_deterministic_and_rewrites_only_its_own_folder(demo, tmp_path):
    again = tmp_path / 'again'
    write_seg_demo(again, seed=0, **SMALL)
    files = sorted(p.relative_to(demo) for p in demo.rglob('*.png'))
    assert len(files) == 6 * 3 + 7 * 3
    assert files == sorted(p.relative_to(again) for p in again.rglob('*.png'))
    assert all((demo / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = tmp_path / 'other'
    write_seg_demo(other, seed=1, **SMALL)
    name = 'synthia/RGB/0000000.png'
    assert (other / name).read_bytes() != (demo / name).read_bytes()
    # Rewriting an earlier demo with fewer images leaves no file of the larger one behind.
    write_seg_demo(again, seed=0, num_source=2, num_target_train=1, num_target_val=1,
                   size=(32, 64))
    assert len(list(again.rglob('*.png'))) == 2 * 3 + 2 * 3
    assert (again / name).read_bytes() == (demo / name).read_bytes()   # per-image streams
    # A folder with other data is refused, and nothing in it is touched.
    foreign = tmp_path / 'foreign'
    (foreign / 'synthia').mkdir(parents=True)
    (foreign / 'synthia' / 'keep.txt').write_text('mine')
    with pytest.raises(ConfigError, match=MARKER):
        write_seg_demo(foreign, **SMALL)
    assert (foreign / 'synthia' / 'keep.txt').read_text() == 'mine'


def _class_means(samples, num_classes: int = 16) -> np.ndarray:
    images = np.stack([s[0] for s in samples]).reshape(-1, 3).astype(np.float64)
    labels = np.stack([s[1] for s in samples]).ravel()
    means = np.full((num_classes, 3), 1e6)
    for c in range(num_classes):
        if (labels == c).any():
            means[c] = images[labels == c].mean(axis=0)
    return means


def _nearest_mean_miou(means: np.ndarray, samples) -> float:
    meter = SegmentationMeter()
    for image, label in samples:
        dist = ((image[..., None, :].astype(np.float64) - means) ** 2).sum(-1)
        meter.add(torch.from_numpy(dist.argmin(-1)), torch.from_numpy(label.astype(np.int64)))
    return meter.compute()['mIoU16']


def test_demo_domains_differ_in_colour_and_target_labels_help(demo):
    source = _all_samples(build_seg_dataset('synthia', demo / 'synthia'))
    train = _all_samples(build_seg_dataset('cityscapes', demo / 'cityscapes', 'train'))
    val = _all_samples(build_seg_dataset('cityscapes', demo / 'cityscapes', 'val'))
    source_means, target_means = _class_means(source), _class_means(train)
    road_shift = np.linalg.norm(source_means[0] - target_means[0])
    assert road_shift > 30, road_shift     # source road (128, 64, 128) vs target (95, 95, 100)
    # A per-pixel nearest class colour: fitted on source it fails on the target val set,
    # fitted on target train labels it works (the gap target labels close).
    source_only = _nearest_mean_miou(source_means, val)
    with_target = _nearest_mean_miou(target_means, val)
    assert with_target > source_only + 20, (source_only, with_target)
    assert with_target > 50


# ---------------------------------------------------------------------------- layout checks

def test_check_layout_names_paths_demo_and_converter(demo, tmp_path):
    check_layout('synthia', demo / 'synthia')
    check_layout('cityscapes', demo / 'cityscapes', 'val')
    with pytest.raises(ConfigError) as err:
        check_layout('synthia', tmp_path / 'nothing')
    message = str(err.value)
    assert 'RGB/*.png' in message and 'GT/LABELS16/*.png' in message
    assert 'make demo-seg' in message and 'tools/make_seg_demo.py' in message
    assert '\n' not in message
    copy = tmp_path / 'synthia'
    shutil.copytree(demo / 'synthia', copy)
    shutil.rmtree(copy / 'GT' / 'LABELS16')
    with pytest.raises(ConfigError, match=f'python tools/convert_seg_labels.py synthia {copy}'):
        check_layout('synthia', copy)
    with pytest.raises(ConfigError, match='make demo-seg'):
        build_seg_dataset('cityscapes', tmp_path, 'train')
    city = tmp_path / 'cityscapes'
    shutil.copytree(demo / 'cityscapes', city)
    next(city.glob('gtFine/train/*/*_labelTrainIds16.png')).unlink()
    with pytest.raises(ConfigError, match='1 of 4 .*convert_seg_labels.py cityscapes'):
        check_layout('cityscapes', city, 'train')
    for suffix in ('labelIds', 'labelTrainIds16'):     # an image with no label at all
        (city / f'gtFine/val/democity/democity_000004_000019_gtFine_{suffix}.png').unlink()
    with pytest.raises(ConfigError, match='1 of 3 .*democity_000004_000019.*restore the labels'):
        check_layout('cityscapes', city, 'val')
    for kind, split, match in (('cityscapes', None, 'needs a split'),
                               ('synthia', 'val', 'no .val. split'), ('gta', 'train', 'unknown')):
        with pytest.raises(ConfigError, match=match):
            check_layout(kind, demo, split)


# ---------------------------------------------------------------------------- converter

def test_converter_skips_existing_and_force_rewrites(demo, tmp_path, capsys):
    root = tmp_path / 'synthia'
    shutil.copytree(demo / 'synthia', root)
    labels = sorted((root / 'GT/LABELS16').glob('*.png'))
    reference = {p.name: p.read_bytes() for p in labels}
    labels[0].unlink()
    labels[1].unlink()
    cv2.imwrite(str(labels[2]), np.zeros((32, 64), np.uint8))      # a stale label
    stats = convert_labels('synthia', root)
    assert (stats.total, stats.written, stats.skipped) == (6, 2, 4)
    assert labels[0].read_bytes() == reference[labels[0].name]
    assert not cv2.imread(str(labels[2]), cv2.IMREAD_UNCHANGED).any()   # skipped: unchanged
    assert convert_labels('synthia', root).written == 0                   # idempotent
    tool = _tool('convert_seg_labels')
    assert tool.main(['synthia', str(root), '--force', '--every', '4']) == 0
    out = capsys.readouterr().out
    assert '4/6 labels (4 written' in out and 'done: 6 written, 0 skipped' in out
    assert {p.name: p.read_bytes() for p in labels} == reference
    assert not list(root.rglob('*.tmp'))
    # Cityscapes, both splits by default, then one-line errors for a wrong root or option.
    city = tmp_path / 'cityscapes'
    shutil.copytree(demo / 'cityscapes', city)
    assert convert_labels('cityscapes', city, force=True).written == 7
    assert tool.main(['synthia', str(city)]) == 2
    assert tool.main(['cityscapes', str(city), '--split', 'test']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and 'no SYNTHIA labels' in err[0] and 'gtFine/test' in err[1]


def test_interrupted_write_leaves_no_partial_label(demo, tmp_path, monkeypatch):
    src = demo / 'synthia/GT/LABELS/0000000.png'
    dst = tmp_path / 'out' / '0000000.png'

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert.os, 'replace', interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_synthia_file(src, dst)
    assert not dst.exists() and not list(dst.parent.iterdir())
    monkeypatch.undo()
    assert convert_synthia_file(src, dst) is True and dst.exists()


def test_make_seg_demo_cli(tmp_path, capsys):
    tool = _tool('make_seg_demo')
    root = tmp_path / 'demo'
    assert tool.main(['--root', str(root), '--num-source', '2', '--num-target-train', '1',
                      '--num-target-val', '1', '--size', '16', '32']) == 0
    assert 'train: 1, val: 1' in capsys.readouterr().out
    assert (root / MARKER).is_file() and len(list(root.rglob('*.png'))) == 12
    assert tool.main(['--root', str(ROOT / 'saal_tasks')]) == 2
    assert 'not empty' in capsys.readouterr().err
