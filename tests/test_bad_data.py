"""Damaged SYNTHIA/Cityscapes labels and VOC files (docs/reliability.md, cases 46-55).

Each problem is found when the dataset is built (headers, XML and file ends only; label
values when a label is read), reported in one line naming the file, the list that holds it
and the fix; ``tools/train_al.py`` exits with 2 and leaves the work dir as it was.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from saal_tasks.core.errors import ConfigError  # noqa: E402
from saal_tasks.registry import TASKS  # noqa: E402
from saal_tasks.tasks.detection.demo import DemoSplit, write_voc_demo  # noqa: E402
from saal_tasks.tasks.segmentation.data import ImageSet  # noqa: E402

from seg_helpers import SIZE, tiny_seg_cfg, write_tiny_seg_data  # noqa: E402
from test_detection import tiny_cfg  # noqa: E402
from test_errors import snapshot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPLITS = (DemoSplit('VOC2007', 'trainval', 6), DemoSplit('VOC2007', 'test', 3, first_number=101),
          DemoSplit('VOC2012', 'trainval', 3, id_prefix='2008_'))


def single_line(err: BaseException, *parts: str) -> str:
    text = str(err)
    assert '\n' not in text and len(text) < 700, text
    for part in parts:
        assert part in text, (part, text)
    return text


def train_al(config: Path, work_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'train_al.py'), str(config),
                           '--work-dir', str(work_dir)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})


def error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
    return lines[0]


# ---------------------------------------------------------------- segmentation (46-48)
@pytest.fixture()
def seg_root(tmp_path) -> Path:
    return write_tiny_seg_data(tmp_path / 'seg')


def _label(root: Path, name: str) -> Path:
    return root / 'synthia' / 'GT' / 'LABELS16' / f'{name}.png'


def _val_label(root: Path) -> Path:
    return sorted((root / 'cityscapes' / 'gtFine' / 'val').rglob('*labelTrainIds16.png'))[0]


def _source(root: Path) -> dict:
    return dict(kind='synthia', data_root=str(root / 'synthia'))


def test_46_label_of_another_size_is_refused_at_build(seg_root):
    path = _label(seg_root, '0000003')
    label = np.asarray(Image.open(path))
    Image.fromarray(np.ascontiguousarray(label[:, :60])).save(path)
    with pytest.raises(ConfigError) as err:
        ImageSet(_source(seg_root), SIZE)      # before: stretched to the image's size
    single_line(err.value, str(path), 'is 60x32', 'is 64x32',
                'python tools/convert_seg_labels.py synthia')


def test_46_cityscapes_validation_label_of_another_size(seg_root):
    path = _val_label(seg_root)
    label = np.asarray(Image.open(path))
    Image.fromarray(np.ascontiguousarray(label[:30])).save(path)
    with pytest.raises(ConfigError) as err:
        ImageSet(dict(kind='cityscapes', data_root=str(seg_root / 'cityscapes'), split='val'),
                  SIZE)                          # before: scored at the wrong size
    single_line(err.value, str(path), 'is 64x30', 'is 64x32', '--split val --force')


def test_46_several_wrong_labels_are_counted(seg_root):
    for name in ('0000001', '0000004'):
        path = _label(seg_root, name)
        Image.fromarray(np.zeros((16, 64), np.uint8)).save(path)
    with pytest.raises(ConfigError) as err:
        ImageSet(_source(seg_root), SIZE)
    single_line(err.value, '2 of 12 labels differ in size', str(_label(seg_root, '0000001')))


def test_47_label_value_outside_train_ids_names_the_file(seg_root):
    path = _label(seg_root, '0000002')
    label = np.asarray(Image.open(path)).copy()
    label[0, :3] = (20, 16, 254)
    Image.fromarray(label).save(path)
    images = ImageSet(_source(seg_root), SIZE)   # values are checked when a label is read
    images.get(0)
    with pytest.raises(ConfigError) as err:
        images.get(2)                            # before: a crash inside cross-entropy
    single_line(err.value, str(path), 'values 16, 20, 254', 'train ids 0..15 nor 255')


def test_47_ignore_and_every_train_id_are_accepted(seg_root):
    path = _label(seg_root, '0000002')
    label = np.asarray(Image.open(path)).copy()
    label[0, :17] = list(range(16)) + [255]
    Image.fromarray(label).save(path)
    np.testing.assert_array_equal(ImageSet(_source(seg_root), SIZE).raw(2)[1], label)


def test_47_palette_label_reads_as_its_indices(seg_root):
    path = _label(seg_root, '0000002')
    label = np.asarray(Image.open(path))
    palette = Image.fromarray(label, mode='L').convert('P')
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, 7)])
    palette.save(path)
    assert Image.open(path).mode == 'P'
    np.testing.assert_array_equal(ImageSet(_source(seg_root), SIZE).raw(2)[1], label)


def test_48_colour_label_is_refused_at_build(seg_root):
    path = _label(seg_root, '0000005')
    label = np.asarray(Image.open(path))
    Image.fromarray(np.stack([label] * 3, axis=-1)).save(path)
    with pytest.raises(ConfigError) as err:
        ImageSet(_source(seg_root), SIZE)
    single_line(err.value, str(path), 'mode RGB', 'one 8-bit channel')


def test_46_train_al_stops_with_one_line_and_writes_nothing(seg_root, tmp_path):
    path = _label(seg_root, '0000003')
    Image.fromarray(np.zeros((32, 60), np.uint8)).save(path)
    work_dir = tmp_path / 'run'
    config = tmp_path / 'seg_cfg.py'
    tiny_seg_cfg(seg_root, work_dir).dump(str(config))
    proc = train_al(config, work_dir)
    line = error_line(proc)
    assert str(path) in line and 'is 60x32' in line, line
    assert not any(name.endswith(('.json', '.npz', '.npy', '.pth'))
                   for name in snapshot(work_dir))


# ---------------------------------------------------------------- detection (49-55)
@pytest.fixture()
def voc_root(tmp_path) -> Path:
    root = tmp_path / 'VOCdevkit'
    write_voc_demo(root, splits=SPLITS, image_size=(96, 128), seed=5)
    return root


def build(voc_root: Path, **task_options):
    return TASKS.build(tiny_cfg(voc_root, **task_options).task)


def _xml(voc_root: Path, img_id: str = '000002', year: str = 'VOC2007') -> Path:
    return voc_root / year / 'Annotations' / f'{img_id}.xml'


def _jpg(voc_root: Path, img_id: str, year: str = 'VOC2007') -> Path:
    return voc_root / year / 'JPEGImages' / f'{img_id}.jpg'


def _image_set(voc_root: Path, year: str = 'VOC2007', name: str = 'trainval') -> str:
    return str(voc_root / year / 'ImageSets' / 'Main' / f'{name}.txt')


def test_49_malformed_xml_names_the_file(voc_root):
    path = _xml(voc_root)
    path.write_text(path.read_text()[:-30])
    with pytest.raises(ConfigError) as err:
        build(voc_root)                          # before: a 61-line ParseError, no file
    single_line(err.value, str(path), 'not well-formed XML', 'line ',
                f'remove 000002 from {_image_set(voc_root)}')


@pytest.mark.parametrize('what', ['xml', 'jpg'])
def test_50_missing_xml_or_jpeg_names_the_file_and_the_image_set(voc_root, what):
    path = _xml(voc_root, '2008_000002', 'VOC2012') if what == 'xml' else \
        _jpg(voc_root, '2008_000002', 'VOC2012')
    path.unlink()
    with pytest.raises(FileNotFoundError) as err:
        build(voc_root)                          # before: errno text naming only the path
    single_line(err.value, str(path), 'does not exist',
                f'listed in {_image_set(voc_root, "VOC2012")}')


def test_51_truncated_jpeg_stops_or_is_skipped(voc_root):
    path = _jpg(voc_root, '000004')
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ConfigError) as err:
        build(voc_root)                          # before: found only when training read it
    single_line(err.value, str(path), 'truncated', "task.on_corrupt='skip'")
    task = build(voc_root, on_corrupt='skip')
    ids = task.sample_ids().tolist()
    assert len(ids) == 6 + 3 - 1 and 4 not in ids and 5 in ids


def test_51_truncated_test_image_always_stops(voc_root):
    path = _jpg(voc_root, '000102')
    data = path.read_bytes()
    path.write_bytes(data[:-200])
    with pytest.raises(ConfigError) as err:
        build(voc_root, on_corrupt='skip')
    text = single_line(err.value, str(path), _image_set(voc_root, name='test'),
                       'evaluation uses every listed image')
    assert 'on_corrupt' not in text


def test_51_bytes_after_the_end_marker_are_accepted(voc_root):
    path = _jpg(voc_root, '000003')
    path.write_bytes(path.read_bytes() + b'\x00' * 100)   # some writers pad after EOI
    assert len(build(voc_root).sample_ids()) == 9


def _rename_class(path: Path, old: str, new: str) -> int:
    text = path.read_text()
    count = text.count(f'<name>{old}</name>')
    path.write_text(text.replace(f'<name>{old}</name>', f'<name>{new}</name>'))
    return count


def test_52_unknown_class_stops_or_is_dropped_with_a_warning(voc_root, monkeypatch):
    from saal_tasks.tasks.detection import voc_files

    xmls = sorted(voc_root.glob('VOC20*/Annotations/*.xml'))
    pool_xmls = [p for p in xmls if p.stem.startswith('2008_') or int(p.stem) < 100]
    objects = sum(p.read_text().count('<object>') for p in pool_xmls)
    counts = {p.stem: _rename_class(p, 'car', 'automobile') for p in pool_xmls[:6]}
    renamed = sum(counts.values())
    assert renamed > 0
    first = min(img_id for img_id, count in counts.items() if count)
    with pytest.raises(ConfigError) as err:
        build(voc_root)                          # before: the boxes vanished silently
    single_line(err.value, "'automobile'", str(_xml(voc_root, first)),
                "task.on_unknown_class='drop'")
    logged: list[str] = []
    monkeypatch.setattr(voc_files, 'print_log', lambda msg, **kw: logged.append(msg))
    task = build(voc_root, on_unknown_class='drop')
    boxes = [box for sid in task.sample_ids() for box in task.pool.ground_truth(int(sid))]
    assert len(boxes) == objects - renamed
    car = task.pool.classes.index('car')
    renamed_ids = [int(k) for k, c in counts.items() if c]
    for sid in renamed_ids:
        if sid in task.sample_ids():
            assert all(box['bbox_label'] != car for box in task.pool.ground_truth(sid))
    assert len(logged) == 1, logged
    assert f"dropped {renamed} box(es)" in logged[0] and f"{{'automobile': {renamed}}}" in \
        logged[0] and f'in {len(renamed_ids)} annotation(s)' in logged[0], logged


def test_53_size_in_xml_differing_from_the_jpeg_is_named(voc_root):
    path = _xml(voc_root, '000005')
    text = path.read_text()
    width = int(text.split('<width>')[1].split('</width>')[0])
    path.write_text(text.replace(f'<width>{width}</width>', f'<width>{width + 7}</width>'))
    with pytest.raises(ConfigError) as err:
        build(voc_root)                          # before: the boxes were blamed later
    single_line(err.value, str(path), f'{width + 7}x', f'is {width}x', '<width> and <height>')


@pytest.mark.parametrize('edit, expected', [
    (('<name>person</name>', '<name></name>'), 'without <name>'),
    (('<xmin>', '<xmin>x'), 'numeric xmin'),
    (('<width>', '<width>w'), 'integer <width>'),
])
def test_54_objects_and_sizes_that_mmdet_cannot_read(voc_root, edit, expected):
    for img_id in ('000001', '000002', '000003'):
        path = _xml(voc_root, img_id)
        if edit[0] in path.read_text():
            path.write_text(path.read_text().replace(edit[0], edit[1], 1))
            break
    with pytest.raises(ConfigError) as err:
        build(voc_root)
    single_line(err.value, str(path), expected)


@pytest.mark.parametrize('option, value', [('on_corrupt', 'ignore'),
                                           ('on_unknown_class', 'keep')])
def test_55_bad_option_values_are_refused(voc_root, option, value):
    with pytest.raises(ConfigError) as err:
        build(voc_root, **{option: value})
    single_line(err.value, f'task.{option}', repr(value))


def test_49_train_al_stops_with_one_line_and_writes_nothing(voc_root, tmp_path):
    path = _xml(voc_root, '000003')
    path.write_text('<annotation><size>')
    work_dir = tmp_path / 'run'
    config = tmp_path / 'det_cfg.py'
    cfg = tiny_cfg(voc_root)
    cfg.work_dir = str(work_dir)
    cfg.dump(str(config))
    line = error_line(train_al(config, work_dir))
    assert str(path) in line and 'not well-formed XML' in line, line
    assert not any(name.endswith(('.json', '.npz', '.npy', '.pth'))
                   for name in snapshot(work_dir))


@pytest.mark.parametrize('line', ['', '000003 1', ' 000003'])
def test_54_image_set_lines_mmdet_cannot_read_are_named(voc_root, line):
    image_set = Path(_image_set(voc_root))
    ids = image_set.read_text().splitlines()
    image_set.write_text('\n'.join(ids[:2] + [line] + ids[3:]) + '\n')
    with pytest.raises(ConfigError) as err:
        build(voc_root)
    single_line(err.value, f'line 3 of {image_set}', 'one image id per line')
