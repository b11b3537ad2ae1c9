"""Rows of local dataset files (JSON Lines, JSON, CSV, Parquet), each with the line it starts on.

Read here rather than through `datasets`, so that a bad file is refused naming the file, the line
and the fix (`data/gsm8k.jsonl:7: not valid JSON ...`) instead of a generic builder error.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# Suffixes that name a file, not a hub id: refused with the formats that are read.
OTHER_FILE_SUFFIXES = (".txt", ".tsv", ".xlsx", ".xls", ".gz", ".zip", ".arrow", ".yaml", ".yml")


class DatasetFileError(ValueError):
    """A dataset file that cannot be read; the message names the file (and line) and the fix."""


Row = tuple[str, dict]  # (where: `path:line` or `path row k`, the row)


def is_local_file(path_or_id: str) -> bool:
    """Whether a dataset reference names a local file (read here) rather than a hub id."""
    path = Path(path_or_id)
    return (
        path.suffix.lower() in SUFFIXES + OTHER_FILE_SUFFIXES
        or path_or_id.startswith(("/", "./", "../", "~"))
        or path.is_file()
    )


def read_rows(path_or_id: str, columns: tuple[str, ...]) -> Iterator[Row]:
    """The rows of a local file, each checked to have `columns`; lazily, so a limit reads less.

    A file with no row at all is refused: every use of a dataset needs at least one.
    """
    path = Path(path_or_id).expanduser()
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DatasetFileError(
            f"{path_or_id}: unsupported file type {suffix or '(no suffix)'!r}; save the rows as "
            f"{', '.join(SUFFIXES)} (or give a hub id)"
        )
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise DatasetFileError(
            f"{path_or_id}: {what}; give the path of a {'/'.join(SUFFIXES)} file (relative paths "
            "start from the working directory) or a hub id"
        )
    if suffix == ".parquet":
        rows = _parquet_rows(path, path_or_id)
    elif suffix == ".csv":
        rows = _csv_rows(path, path_or_id, columns)
    elif suffix == ".json" and _starts_with(path, "["):
        rows = _json_array_rows(path, path_or_id)
    else:  # .jsonl, or .json holding one object per line (as `datasets` reads it)
        rows = _jsonl_rows(path, path_or_id)
    empty = True
    for where, row in rows:
        empty = False
        _check_columns(where, row, columns)
        yield where, row
    if empty:
        raise DatasetFileError(
            f"{path_or_id}: no rows (the file is empty); give a file with at least one row with "
            f"the columns {', '.join(columns)}"
        )


def _check_columns(where: str, row: dict, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise DatasetFileError(
            f"{where}: no {_names(missing)} (keys found: {', '.join(map(str, row)) or 'none'}); "
            f"every row needs {', '.join(columns)}"
        )
    empty = [c for c in columns if row[c] is None]
    if empty:
        raise DatasetFileError(f"{where}: {_names(empty)} empty; give every row a value")


def _names(columns: list[str]) -> str:
    return ("column " if len(columns) == 1 else "columns ") + ", ".join(map(repr, columns))


def _text(path: Path, name: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DatasetFileError(
            f"{name}:{line}: not UTF-8 text (byte {data[err.start]:#04x}); save the file as UTF-8"
        ) from None


def _starts_with(path: Path, char: str) -> bool:
    with path.open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(char.encode())


def _jsonl_rows(path: Path, name: str) -> Iterator[Row]:
    for number, line in enumerate(_text(path, name).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetFileError(
                f"{name}:{number}: not valid JSON ({err.msg} at column {err.colno}); each line "
                "must be one JSON object: fix the line or remove it"
            ) from None
        yield f"{name}:{number}", _object(row, f"{name}:{number}", "each line")


def _json_array_rows(path: Path, name: str) -> Iterator[Row]:
    text = _text(path, name)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetFileError(
            f"{name}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno}); fix the file "
            "(one JSON array of objects, or one object per line)"
        ) from None
    # Each item's line: where its text starts, found by decoding the array item by item.
    decoder, position, line = json.JSONDecoder(), text.index("[") + 1, 1
    line += text.count("\n", 0, position)
    for item in items:
        start = _skip(text, position)
        line += text.count("\n", position, start)
        _, end = decoder.raw_decode(text, start)
        yield f"{name}:{line}", _object(item, f"{name}:{line}", "each item of the array")
        line += text.count("\n", start, end)
        position = _skip(text, end) + 1  # past the comma


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _object(row: object, where: str, what: str) -> dict:
    if not isinstance(row, dict):
        raise DatasetFileError(
            f"{where}: a JSON {_json_type(row)} where {what} must be one JSON object "
            '({"column": value, ...})'
        )
    return row


def _json_type(value: object) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _csv_rows(path: Path, name: str, columns: tuple[str, ...]) -> Iterator[Row]:
    lines = _text(path, name).splitlines(keepends=True)
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(lines, strict=True)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            return
        missing = [c for c in columns if c not in header]
        if missing:
            raise DatasetFileError(
                f"{name}:1: no {_names(missing)} in the header (columns found: "
                f"{', '.join(header)}); the first line must name the columns {', '.join(columns)}"
            )
        while True:
            start = reader.line_num + 1
            fields = next(reader, None)
            if fields is None:
                return
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise DatasetFileError(
                    f"{name}:{start}: {len(fields)} fields where the header has {len(header)}; "
                    'quote fields that hold commas or line breaks ("a, b")'
                )
            yield f"{name}:{start}", dict(zip(header, fields, strict=True))
    except csv.Error as err:
        raise DatasetFileError(
            f"{name}:{start}: not valid CSV ({err}); quote fields that hold commas, "
            'quotes or line breaks, and double the quotes inside them ("say ""hi""")'
        ) from None


def _parquet_rows(path: Path, name: str) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DatasetFileError(
            f"{name}: not a readable Parquet file ({err}); write it again with pandas or "
            "pyarrow, or save the rows as .jsonl"
        ) from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{name} row {i}", row
