"""Classification queries as files people can label, and their answers read back.

Export: one PNG per queried image (``sample_<id>.png``) and ``query.csv`` with the columns
``sample_id,file,label`` (``label`` empty). Answers: the same CSV with ``label`` filled in, a
JSON object ``{"<sample_id>": label}``, a JSON list of ``{"sample_id" | "image": ...,
"label" | "choice": ...}`` records, or the CSV export of an annotation tool such as Label Studio
(columns ``image`` and ``choice``): a sample is identified by its ``sample_id`` column or by the
``sample_<id>`` part of its image file name, and a label is a class index or a class name.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ...core.errors import AnnotationError
from ...core.text_files import read_csv_records, read_text

_ID_IN_NAME = re.compile(r'sample_(\d+)')
_ID_KEYS = ('sample_id',)  # not 'id': annotation tools use it for their own task ids
_FILE_KEYS = ('file', 'image', 'img', 'path', 'filename')
_LABEL_KEYS = ('label', 'choice', 'class', 'category')


def image_name(sample_id: int) -> str:
    """File name of an exported image; the id survives tools that prefix file names."""
    return f'sample_{sample_id:06d}.png'


def export_images(images: torch.Tensor, sample_ids: np.ndarray, max_value: float,
                  folder: Path) -> None:
    """Write ``images`` ``[K, C, H, W]`` as PNGs plus ``query.csv`` into ``folder``."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (images.to(torch.float32) / max_value * 255).round().clamp(0, 255).to(torch.uint8)
    rows = []
    for sample_id, img in zip(sample_ids, arrays):
        hwc = img.permute(1, 2, 0).numpy()
        Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc).save(
            folder / image_name(int(sample_id)))
        rows.append({'sample_id': int(sample_id), 'file': image_name(int(sample_id)),
                     'label': ''})
    with open(folder / 'query.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['sample_id', 'file', 'label'])
        writer.writeheader()
        writer.writerows(rows)


def _pick(record: dict[str, Any], keys: Sequence[str]) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in record.items()}
    for key in keys:
        if key in lowered and lowered[key] not in (None, ''):
            return lowered[key]
    return None


def _sample_id(record: dict[str, Any], where: str) -> int:
    value = _pick(record, _ID_KEYS)
    if value is not None:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise AnnotationError(f'{where}: sample id {value!r} is not an integer') from None
    name = _pick(record, _FILE_KEYS)
    match = _ID_IN_NAME.search(str(name)) if name is not None else None
    if match is None:
        raise AnnotationError(f'{where}: no sample id: give a sample_id column or an image file '
                              'named sample_<id>.png')
    return int(match.group(1))


def _label(value: Any, class_names: Sequence[str], where: str) -> int:
    if isinstance(value, dict):  # Label Studio JSON: {"choices": ["cat"]}
        value = (value.get('choices') or [None])[0]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None or value == '':
        raise AnnotationError(f'{where}: the label is empty: label every queried image')
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if text in class_names:
        return class_names.index(text)
    if re.fullmatch(r'-?\d+', text):
        return int(text)
    shown = ', '.join(class_names[:10]) + (', ...' if len(class_names) > 10 else '')
    raise AnnotationError(f'{where}: label {text!r} is neither a class index nor a class name '
                          f'({shown})')


def read_answers(path: Path, class_names: Sequence[str]) -> list[tuple[int, int]]:
    """Parse an answers file into ``(sample_id, class index)`` pairs, in file order.

    Duplicates are kept (the loop rejects them with the ids named).

    Raises:
        AnnotationError: The file cannot be parsed, naming the row and the problem.
    """
    path = Path(path)
    if path.suffix.lower() == '.json':
        try:
            data = json.loads(read_text(path))
        except AnnotationError:
            raise
        except ValueError as err:
            raise AnnotationError(f'{path} is not valid JSON ({err})') from None
        if isinstance(data, dict):
            records = [{'sample_id': k, 'label': v} for k, v in data.items()]
        elif isinstance(data, list):
            records = [r if isinstance(r, dict) else {} for r in data]
        else:
            raise AnnotationError(f'{path}: expected a JSON object or list of records')
    elif path.suffix.lower() == '.csv':
        records = read_csv_records(path)
    else:
        raise AnnotationError(f'{path}: answers must be .csv or .json')
    pairs = []
    for row, record in enumerate(records, start=1):
        where = f'record {row}'
        label = _pick(record, _LABEL_KEYS)
        if label is None and isinstance(record.get('annotations'), list):
            label = record['annotations']
        pairs.append((_sample_id(record, where), _label(label, class_names, where)))
    return pairs
