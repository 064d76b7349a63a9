"""Answers files as people save them (docs/reliability.md, cases 39-44).

Excel's "CSV UTF-8" starts with a byte-order mark, European locales separate fields with
``;``, other tools with tabs: each is read exactly like the plain file. Another encoding is
refused with the encoding named, the file named once, and nothing in the run changed.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from saal_tasks.core.errors import AnnotationError
from saal_tasks.core.text_files import csv_delimiter, decode_text, read_csv_records
from saal_tasks.engine import ActiveLearningLoop

from test_file_oracle import make_cfg, query_ids
from test_errors import snapshot


def _rows(loop, folder: Path) -> list[dict]:
    ids = query_ids(folder)
    truth = loop.task.ground_truth(np.array(ids))
    return [{'sample_id': i, 'label': truth[i]} for i in ids]


def _csv_text(rows: list[dict], delimiter: str = ',') -> str:
    out = io.StringIO(newline='')
    writer = csv.DictWriter(out, fieldnames=['sample_id', 'label'], delimiter=delimiter)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@pytest.fixture
def waiting(tmp_path):
    """A run waiting for the answers of its round-0 query, and the expected records."""
    work = tmp_path / 'run'
    loop = ActiveLearningLoop.from_cfg(make_cfg(work))
    loop.run()
    rows = _rows(loop, work / 'queries' / 'round_000')
    return work, rows


@pytest.mark.parametrize('delimiter, bom', [(',', True), (';', False), (';', True),
                                            ('\t', False)])
def test_bom_and_delimiters_import_like_the_plain_file(waiting, tmp_path, delimiter, bom):
    work, rows = waiting
    text = _csv_text(rows, delimiter)
    path = tmp_path / 'answers.csv'
    path.write_bytes((codecs.BOM_UTF8 if bom else b'') + text.replace('\r\n', '\n').encode())
    loop = ActiveLearningLoop.from_cfg(make_cfg(work))
    assert loop.import_answers(path) == (0, len(rows))
    read = loop.task.read_answers(path)
    assert read == [(int(r['sample_id']), int(r['label'])) for r in rows]


@pytest.mark.parametrize('encode, named', [
    (lambda text: text.encode('latin-1'), 'Latin-1'),
    (lambda text: text.encode('utf-16'), 'UTF-16'),
])
def test_other_encodings_are_refused_naming_the_encoding_and_nothing_changes(
        waiting, tmp_path, encode, named):
    work, rows = waiting
    # A comment column with an accent, as a French annotator would write it.
    text = 'sample_id;label;remarque\n' + ''.join(
        f"{r['sample_id']};{r['label']};vérifié\n" for r in rows)
    path = tmp_path / 'answers.csv'
    path.write_bytes(encode(text))
    before = snapshot(work)
    with pytest.raises(AnnotationError) as info:
        ActiveLearningLoop.from_cfg(make_cfg(work)).import_answers(path)
    message = str(info.value)
    assert named in message and 'save it as UTF-8' in message and '\n' not in message
    assert message.count(str(path)) == 1
    assert snapshot(work) == before


def test_missing_answers_file_is_one_line_naming_it(waiting, tmp_path):
    work, _ = waiting
    path = tmp_path / 'nope.csv'
    before = snapshot(work)
    with pytest.raises(FileNotFoundError, match='does not exist: check the path') as info:
        ActiveLearningLoop.from_cfg(make_cfg(work)).import_answers(path)
    assert str(info.value).count(str(path)) == 1
    assert snapshot(work) == before


def test_json_answers_with_bom_are_read(waiting, tmp_path):
    work, rows = waiting
    path = tmp_path / 'answers.json'
    path.write_bytes(codecs.BOM_UTF8 + json.dumps(rows).encode())
    assert ActiveLearningLoop.from_cfg(make_cfg(work)).import_answers(path) == (0, len(rows))


def test_delimiter_comes_from_the_header_not_the_data():
    # A data row full of commas (a quoted label) does not outvote the header's ';'.
    assert csv_delimiter('sample_id;label\n3;"a,b,c,d"\n') == ';'
    assert csv_delimiter('\n\nsample_id\tlabel\n') == '\t'
    assert csv_delimiter('sample_id,label\n') == ','
    assert csv_delimiter('label\n') == ','  # one column: nothing to split


def test_decode_text_known_answers(tmp_path):
    assert decode_text(codecs.BOM_UTF8 + 'é'.encode(), 'f') == 'é'
    with pytest.raises(AnnotationError, match=r'byte 0xe9 at position 1'):
        decode_text('aé'.encode('latin-1'), 'f.csv')
    path = tmp_path / 'a.csv'
    path.write_bytes(codecs.BOM_UTF8 + b' sample_id ; label \n5;3\n')
    assert read_csv_records(path) == [{'sample_id': '5', 'label': '3'}]


def test_coco_answers_with_bom_are_read(tmp_path):
    pytest.importorskip('mmdet')
    from saal_tasks.tasks.detection.label_files import read_coco_answers
    coco = {'images': [{'id': 1, 'file_name': 'sample_000005.jpg', 'width': 100,
                        'height': 80}],
            'categories': [{'id': 4, 'name': 'car'}],
            'annotations': [{'id': 1, 'image_id': 1, 'category_id': 4,
                             'bbox': [10, 20, 30, 40]}]}
    plain, with_bom = tmp_path / 'plain.json', tmp_path / 'bom.json'
    plain.write_text(json.dumps(coco))
    with_bom.write_bytes(codecs.BOM_UTF8 + json.dumps(coco).encode())
    classes = ('person', 'car')
    expected = read_coco_answers(plain, classes, lambda sid: (100, 80))
    assert expected == [(5, [{'bbox': [10.0, 20.0, 40.0, 60.0], 'bbox_label': 1,
                              'ignore_flag': 0}])]
    assert read_coco_answers(with_bom, classes, lambda sid: (100, 80)) == expected
    latin = tmp_path / 'latin.json'
    latin.write_bytes(json.dumps(coco).replace('"car"', '"café"').encode('latin-1'))
    with pytest.raises(AnnotationError, match='Latin-1'):
        read_coco_answers(latin, classes, lambda sid: (100, 80))
