"""Text files that people write (answers): encodings and CSV dialects as spreadsheets save them.

Excel writes a UTF-8 byte-order mark and, in locales with a decimal comma, ``;`` between
fields; some tools write tabs. All of these are read. A file in another encoding is refused
with the encoding it appears to be in, because guessing would silently change class names
with accents.
"""
from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

from .errors import AnnotationError

#: Delimiters a CSV may use; the header line decides which one.
CSV_DELIMITERS = (',', ';', '\t')

_UTF16_BOMS = {codecs.BOM_UTF16_LE: 'UTF-16 LE', codecs.BOM_UTF16_BE: 'UTF-16 BE'}
_SAVE_AS_UTF8 = 'save it as UTF-8 (in Excel: "CSV UTF-8"), then import it again'


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text of a file's bytes, with or without a byte-order mark.

    Args:
        data: The file's bytes.
        name: The file, named in errors.

    Returns:
        The text without the byte-order mark.

    Raises:
        AnnotationError: The bytes are not UTF-8; names the encoding they appear to be in
            (UTF-16 from its byte-order mark, else Latin-1/Windows-1252) and the first bad byte.
    """
    for bom, encoding in _UTF16_BOMS.items():
        if data.startswith(bom):
            raise AnnotationError(f'{name} is {encoding} text: {_SAVE_AS_UTF8}')
    try:
        return data.decode('utf-8-sig')
    except UnicodeDecodeError as err:
        byte = data[err.start]
        raise AnnotationError(
            f'{name} is not UTF-8 (byte 0x{byte:02x} at position {err.start}; it looks like '
            f'Latin-1/Windows-1252): {_SAVE_AS_UTF8}') from None


def read_text(path: str | Path) -> str:
    """The UTF-8 text of ``path`` (see :func:`decode_text`).

    Raises:
        AnnotationError: The file does not exist, cannot be read, or is not UTF-8.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AnnotationError(f'{path} does not exist: check the path of the answers '
                              'file') from None
    except OSError as err:
        raise AnnotationError(f'cannot read {path} ({err.strerror or err}): check its '
                              'permissions') from None
    return decode_text(data, str(path))


def csv_delimiter(text: str) -> str:
    """The delimiter of a CSV text: the one of :data:`CSV_DELIMITERS` its header uses most.

    The header line is what people never leave empty, and its field names hold none of the
    delimiters, so counting there is reliable where sniffing the data rows is not (a label
    like ``"3,5"`` or a path with ``;``).
    """
    header = next((line for line in text.splitlines() if line.strip()), '')
    counts = {d: header.count(d) for d in CSV_DELIMITERS}
    best = max(CSV_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ','


def read_csv_records(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts keyed by its (stripped) header names.

    UTF-8 with or without a byte-order mark; ``,``, ``;`` or tab delimited (from the header).

    Raises:
        AnnotationError: The file cannot be read or is not UTF-8 (see :func:`read_text`).
    """
    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=''), delimiter=csv_delimiter(text))
    records = []
    for row in reader:
        records.append({(key or '').strip(): value for key, value in row.items()
                        if key is not None})
    return records


__all__ = ['CSV_DELIMITERS', 'csv_delimiter', 'decode_text', 'read_csv_records', 'read_text']
