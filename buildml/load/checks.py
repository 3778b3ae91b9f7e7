"""Dataset checks: row counts, columns and emptiness of a target's data outputs, validated at load, run on the host."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os

from buildml.errors import LoadError, did_you_mean
from buildml.load.workspace import normalize_relpath

FIELDS = {
    "path": "the data file or directory (an out of the target), relative to the package",
    "format": "csv, tsv, jsonl or parquet (default: from the file name)",
    "min_rows": "at least this many data rows (a csv header is not a row)",
    "max_rows": "at most this many data rows",
    "columns": "columns every file must have",
    "not_empty": "true: at least one data row",
}
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_ORDER = ("not_empty", "columns", "min_rows", "max_rows")


# -- load time ---------------------------------------------------------------------------------
def validate_checks(value, outs, doc, path: tuple, field: str, package: str) -> tuple:
    """The `checks:` list as a keyable tuple of ((field, value), ...) per check, paths workspace-relative."""
    if not isinstance(value, list):
        raise LoadError("expected a list of checks", location=doc.where(path), field=field,
                        hint="e.g. checks: [{path: out/train.csv, min_rows: 1000, columns: [label]}]")
    out_paths = [normalize_relpath(package, o, doc.where(path), field) for o in outs]
    return tuple(_validate_one(item, out_paths, doc, path + (i,), f"{field}[{i}]", package) for i, item in enumerate(value))


def _validate_one(item, outs, doc, path, field, package) -> tuple:
    if not isinstance(item, dict) or "path" not in item:
        raise LoadError("a check is a mapping with a path", location=doc.where(path), field=field,
                        hint="e.g. {path: out/train.csv, min_rows: 1000}")
    for key in item:
        if key not in FIELDS:
            raise LoadError(f"unknown check {key!r}", location=doc.where(path + (key,)), field=field,
                            hint=did_you_mean(str(key), FIELDS) or "checks: " + ", ".join(FIELDS))
    rel = normalize_relpath(package, item["path"], doc.where(path + ("path",)), f"{field}.path")
    if not any(rel == o or rel.startswith(o + "/") for o in outs):
        raise LoadError(f"check path {item['path']!r} is not among the target's outs", location=doc.where(path + ("path",)),
                        field=f"{field}.path", hint="checks read what the command wrote: list it (or its directory) in outs")
    checked = {"path": rel}
    for key in ("min_rows", "max_rows"):
        if key in item:
            v = item[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise LoadError(f"{key} must be a non-negative integer, not {v!r}", location=doc.where(path + (key,)), field=field)
            checked[key] = v
    if "columns" in item:
        cols = item["columns"]
        if not isinstance(cols, list) or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in cols):
            raise LoadError("columns must be a list of column names", location=doc.where(path + ("columns",)), field=field)
        checked["columns"] = tuple(str(c) for c in cols)
    if "not_empty" in item:
        if not isinstance(item["not_empty"], bool):
            raise LoadError("not_empty must be true or false", location=doc.where(path + ("not_empty",)), field=field)
        checked["not_empty"] = item["not_empty"]
    if "format" in item:
        if item["format"] not in set(FORMATS.values()):
            raise LoadError(f"unknown format {item['format']!r}", location=doc.where(path + ("format",)), field=field,
                            hint="formats: csv, tsv, jsonl, parquet")
        checked["format"] = item["format"]
    return tuple(sorted(checked.items()))


# -- after the command -----------------------------------------------------------------------
def run_checks(checks, ws_dir) -> str:
    """The first failure as a sentence naming the check and the path, or '' when every check passes."""
    for check in checks:
        failure = run_check(dict(check), str(ws_dir))
        if failure:
            return failure
    return ""


def run_check(check: dict, ws_dir: str) -> str:
    path = check["path"]
    full = os.path.join(ws_dir, path)
    first = next((k for k in _ORDER if k in check), "path")
    if not os.path.exists(full):
        return f"check {first} failed on {path}: no such file (the command did not write it)"
    files = _data_files(full, check.get("format"))
    if os.path.isdir(full) and not files:
        if check.get("not_empty") or check.get("min_rows"):
            return f"check {'not_empty' if check.get('not_empty') else 'min_rows'} failed on {path}: no data files in the directory"
        return ""
    rows = 0
    for file, fmt in files:
        shown = path if file == full else os.path.relpath(file, ws_dir).replace(os.sep, "/")
        try:
            count, columns = read_table(file, fmt)
        except DataError as exc:
            return f"check {first} failed on {shown}: cannot read it as {fmt}: {exc}"
        missing = [c for c in check.get("columns", ()) if c not in columns]
        if missing:
            return (f"check columns failed on {shown}: missing column{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)} (it has: {_preview(columns)})")
        rows += count
    return _count_failure(check, path, rows)


def _count_failure(check: dict, path: str, rows: int) -> str:
    if check.get("not_empty") and rows == 0:
        return f"check not_empty failed on {path}: no rows"
    if "min_rows" in check and rows < check["min_rows"]:
        return f"check min_rows failed on {path}: {rows} rows, expected at least {check['min_rows']}"
    if "max_rows" in check and rows > check["max_rows"]:
        return f"check max_rows failed on {path}: {rows} rows, expected at most {check['max_rows']}"
    return ""


def _preview(columns) -> str:
    cols = list(columns)
    return ", ".join(cols[:12]) + (f", ... ({len(cols)} columns)" if len(cols) > 12 else "") if cols else "no columns"


def _format_of(name: str, given: str | None) -> str | None:
    if given:
        return given
    base = name[:-3] if name.endswith(".gz") else name
    return FORMATS.get(os.path.splitext(base)[1].lower())


def _data_files(full: str, given: str | None) -> list[tuple[str, str]]:
    """[(file, format)]: the file itself, or every data file under a directory (sorted)."""
    if os.path.isfile(full):
        return [(full, _format_of(full, given) or "csv")]
    found = []
    for dirpath, dirnames, filenames in os.walk(full):
        dirnames.sort()
        for name in sorted(filenames):
            fmt = _format_of(name, given)
            if fmt and not name.startswith((".", "_")):
                found.append((os.path.join(dirpath, name), fmt))
    return found


class DataError(Exception):
    """A data file that cannot be parsed."""


def read_table(path: str, fmt: str) -> tuple[int, list]:
    """(data rows, column names) of one file."""
    if fmt == "parquet":
        return _parquet(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            return _jsonl(f) if fmt == "jsonl" else _delimited(f, "\t" if fmt == "tsv" else ",")
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        raise DataError(str(exc)) from None


def _delimited(f: io.TextIOBase, delimiter: str) -> tuple[int, list]:
    reader = csv.reader(f, delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return 0, []
    return sum(1 for row in reader if row), [h.strip() for h in header]


def _jsonl(f: io.TextIOBase) -> tuple[int, list]:
    rows, columns = 0, None
    for number, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise DataError(f"line {number} is not valid JSON") from None
        if not isinstance(record, dict):
            raise DataError(f"line {number} is not a JSON object")
        columns = set(record) if columns is None else columns & set(record)  # columns every row has
        rows += 1
    return rows, sorted(columns or ())


def _parquet(path: str) -> tuple[int, list]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading parquet needs pyarrow, which is not installed (pip install pyarrow, or the buildml-cli[parquet] extra)") from None
    try:
        meta = pq.ParquetFile(path)
        return meta.metadata.num_rows, list(meta.schema_arrow.names)
    except Exception as exc:  # pyarrow raises its own error types for bad files
        raise DataError(str(exc)) from None


def checked_outcome(outcome, checks, ws_dir, log_path):
    """The executor's outcome, turned into a failure (logged) when a check fails: nothing is then stored."""
    if outcome.exit_code != 0 or not checks:
        return outcome
    failure = run_checks(checks, ws_dir)
    if not failure:
        return outcome
    import dataclasses

    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"buildml: {failure}\n")
    return dataclasses.replace(outcome, exit_code=1, detail=failure)
