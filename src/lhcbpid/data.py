"""Get the dataset (download, cache, verify), read it into float32 arrays with one-line errors, and split it."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from isal import igzip_threaded, isal_zlib

from lhcbpid.atomic import atomic_path
from lhcbpid.errors import InputError
from lhcbpid.schema import CLASSES, FEATURES, ID, LABEL

_HSE = "https://github.com/hse-aml/hadron-collider-machine-learning/releases/download/Week_2"
_MIRROR = "https://github.com/MohamedElashri/Hadron-Collider-ML/releases/download/data"

#: Download locations per dataset: the course release first, then the byte-identical mirror.
URLS: dict[str, tuple[str, ...]] = {
    "training": (f"{_HSE}/training.csv.gz", f"{_MIRROR}/training.csv.gz"),
    "test": (f"{_HSE}/test.csv.gz", f"{_MIRROR}/test.csv.gz"),
}

#: Exact byte sizes of the published files (no checksum is published).
SIZES: dict[str, int] = {"training": 247_314_656, "test": 248_364_236}

#: CSV files at least this large get a Parquet copy in the cache on first read.
PARQUET_CACHE_MIN_BYTES = 50_000_000

#: Bump when the cache layout changes, so old cache files are never read.
PARQUET_CACHE_VERSION = 2

DOWNLOAD_TIMEOUT_SECONDS = 60

#: CSV bytes per streamed block: larger blocks were both slower and hungrier (pyarrow reads ahead several).
STREAM_BLOCK_BYTES = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_DECOMPRESSION_HINTS = ("compressed", "inflate", "gzip", "zlib", "decompress")
_CACHE_MATRIX = "X"  # the cache's feature column: per row, the row's float32 values as fixed-size bytes
#  (row-major, little-endian): read back with one memcpy, no transpose; ~10x faster than one column per feature


# --------------------------------------------------------------------------- download


def default_data_dir() -> Path:
    """Where downloads and caches live: $LHCBPID_DATA, else the user cache dir for lhcbpid."""
    env = os.environ.get("LHCBPID_DATA")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("lhcbpid"))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _record_path(target: Path) -> Path:
    """The small JSON beside a downloaded file that holds its sha256."""
    return target.with_name(target.name + ".sha256.json")


def _recorded_sha256(target: Path) -> str | None:
    """The sha256 recorded at first download, or None if there is no readable record."""
    try:
        return str(json.loads(_record_path(target).read_text())["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_record(target: Path, sha256: str, source: str) -> None:
    """Record a file's sha256, size and origin beside it."""
    record = {"file": target.name, "bytes": target.stat().st_size, "sha256": sha256, "source": source,
              "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with atomic_path(_record_path(target)) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def _cached_file_problem(target: Path, size: int) -> str | None:
    """Why a cached download cannot be used (wrong size, sha256 changed), or None if it is good."""
    actual = target.stat().st_size
    if actual != size:
        return f"has {actual:,} bytes, expected {size:,}"
    sha = file_sha256(target)
    recorded = _recorded_sha256(target)
    if recorded is None:
        try:
            _write_record(target, sha, "found in the cache")
        except OSError:
            pass  # a read-only cache is still usable; the size check passed
    elif sha != recorded:
        return f"sha256 {sha[:12]}... differs from {recorded[:12]}... recorded at first download"
    return None


class _DownloadFailed(Exception):
    """One URL did not give a good file."""


def _download_reason(e: Exception, url: str) -> str:
    """A short reason for a failed request (requests' own messages run to several hundred characters)."""
    import requests
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname
    text = str(e)
    if isinstance(e, requests.HTTPError) and e.response is not None:
        return f"HTTP {e.response.status_code} {e.response.reason}".strip()
    if isinstance(e, requests.exceptions.ChunkedEncodingError):
        read = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected", text)
        got = f" after {int(read.group(1)):,} bytes, {int(read.group(2)):,} missing" if read else ""
        return f"the connection to {host} broke off mid-transfer{got}"
    if isinstance(e, requests.Timeout):
        return f"no answer from {host} within {DOWNLOAD_TIMEOUT_SECONDS} s"
    if "NameResolution" in text or "Name or service not known" in text or "getaddrinfo" in text:
        return f"cannot resolve {host} (no network?)"
    if "refused" in text.lower():
        return f"connection to {host} refused"
    if isinstance(e, requests.ConnectionError):
        return f"cannot connect to {host} ({_first_line(e)[:100]})"
    return _first_line(e)[:160]


def _download_verified(url: str, target: Path, size: int, expected_sha: str | None) -> None:
    """Download url into target through a temp file; keep it only if size (and recorded sha256) match."""
    import pooch
    import requests

    from tqdm import tqdm

    # Our own bar, closed whatever happens: pooch leaves its bar open on a failure, so the error line
    # would be glued to it. Quiet when stderr is not a terminal, like predict's.
    with atomic_path(target) as tmp, tqdm(desc=target.name, total=size, unit="B", unit_scale=True, ncols=79,
                                          file=sys.stderr, disable=None) as bar:  # total > 0: pooch tests bool(bar)
        downloader = pooch.HTTPDownloader(progressbar=bar, chunk_size=1 << 20, timeout=DOWNLOAD_TIMEOUT_SECONDS)
        try:
            downloader(url, str(tmp), None)
        except requests.RequestException as e:
            raise _DownloadFailed(_download_reason(e, url)) from None
        except OSError as e:  # writing the local copy failed: another URL would not help
            raise InputError(f"cannot write {target} ({e.strerror or _first_line(e)}); free some space or choose "
                             f"another directory with --data-dir or $LHCBPID_DATA") from None
        got = tmp.stat().st_size
        if got != size:
            raise _DownloadFailed(f"got {got:,} bytes, expected {size:,} (incomplete or wrong file)")
        sha = file_sha256(tmp)
        if expected_sha is not None and sha != expected_sha:
            raise _DownloadFailed(f"sha256 {sha[:12]}... differs from {expected_sha[:12]}... recorded at "
                                  f"first download (delete {_record_path(target)} to accept a new version)")
    _write_record(target, sha, url)


def fetch_dataset(name: str, data_dir: Path | None = None) -> Path:
    """Path of the verified local copy of training/test.csv.gz, downloading it (course URL, then mirror) if needed."""
    if name not in URLS:
        raise InputError(f"unknown dataset {name!r}; choose one of {', '.join(URLS)}")
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    target = directory / f"{name}.csv.gz"
    size = SIZES[name]
    if target.is_file():
        problem = _cached_file_problem(target, size)
        if problem is None:
            return target
        print(f"lhcbpid: {target} {problem}; downloading it again", file=sys.stderr)
        target.unlink()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the data directory {directory} ({e.strerror}); "
                         f"choose another with --data-dir or $LHCBPID_DATA") from None
    failures = []
    for url in URLS[name]:
        try:
            _download_verified(url, target, size, _recorded_sha256(target))
            return target
        except _DownloadFailed as e:
            failures.append(f"{url}: {e}")
    raise InputError(f"cannot download {name}.csv.gz ({'; '.join(failures)}); download {URLS[name][0]} by hand "
                     f"to {target}, or pass --data PATH to use a copy you already have")


def resolve_data(path: Path | None, name: str, data_dir: Path | None = None) -> Path:
    """The user's --data file if given (it must exist), else the downloaded dataset."""
    return fetch_dataset(name, data_dir) if path is None else _existing_file(path)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Dataset:
    """Features in model order, optional labels (class indices) and IDs, and where they came from."""

    X: np.ndarray
    y: np.ndarray | None
    ids: np.ndarray | None
    path: Path


@dataclass(frozen=True)
class _Layout:
    """What a file holds: its header, and which of the wanted columns to read."""

    path: Path
    kind: str  # "csv", "csv.gz", "parquet", or "cache" (our Parquet copy with one matrix column)
    header: tuple[str, ...]
    features: tuple[str, ...]
    with_label: bool
    with_id: bool

    @property
    def columns(self) -> list[str]:
        """Columns to read, in output order."""
        matrix = [_CACHE_MATRIX] if self.kind == "cache" else list(self.features)
        return matrix + [LABEL] * self.with_label + [ID] * self.with_id

    @property
    def is_parquet(self) -> bool:
        """True for Parquet sources (the user's or our cache)."""
        return self.kind in ("parquet", "cache")


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _existing_file(path: Path) -> Path:
    """The path, if it is a readable file; InputError otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path} is a directory; pass a .csv, .csv.gz or .parquet file")
    return path


def _file_kind(path: Path) -> str:
    """csv, csv.gz or parquet, from the file's first bytes."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(_GZIP_MAGIC):
        return "csv.gz"
    if magic == _PARQUET_MAGIC:
        return "parquet"
    if path.suffix.lower() in (".parquet", ".pq") and magic:
        raise InputError(f"{path} is not a Parquet file (no PAR1 header); write it again or pass a .csv file")
    return "csv"


def _text_stream(path: Path, kind: str) -> io.TextIOWrapper:
    """The decompressed text of a CSV file (BOM stripped; newlines left to the csv module)."""
    raw = pa.input_stream(str(path), compression="gzip" if kind == "csv.gz" else None)
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


def _read_error(path: Path, e: BaseException) -> InputError:
    """An InputError for a file that could not be read at all (corrupt gzip and the like)."""
    detail = _first_line(e)
    if any(h in detail.lower() for h in _DECOMPRESSION_HINTS):
        return InputError(f"{path}: the gzip data is truncated or corrupt ({detail}); download or copy the file again")
    return InputError(f"{path}: cannot read the file ({detail}); check that it is a CSV or Parquet file")


def _csv_header(path: Path, kind: str) -> tuple[str, ...]:
    """Column names from the first line of a CSV file."""
    try:
        with _text_stream(path, kind) as text:
            first = next(csv.reader(text), None)
    except (OSError, pa.ArrowException) as e:
        raise _read_error(path, e) from None
    names = tuple(name.strip() for name in first or ())
    if not any(names):
        raise InputError(f"{path} is empty (no header line); pass a file with a header and data rows")
    return names


def _header(path: Path, kind: str) -> tuple[str, ...]:
    """Column names of a CSV or Parquet file."""
    if kind != "parquet":
        return _csv_header(path, kind)
    try:
        return tuple(pq.ParquetFile(path).schema_arrow.names)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(e)}); write it again") from None


def _name_list(names: Sequence[str], limit: int = 6) -> str:
    """A short comma-separated list of names."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _layout(path: Path, features: Sequence[str], labelled: bool | None, warn_extra: bool = True) -> _Layout:
    """Check a file's header against the wanted columns; warn about extra columns."""
    kind = _file_kind(path)
    header = _header(path, kind)
    duplicated = sorted({n for n in header if header.count(n) > 1})
    if duplicated:
        raise InputError(f"{path}: column {duplicated[0]} appears more than once in the header; keep one copy")
    missing = [f for f in features if f not in header]
    if missing:
        hint = " (the first line does not look like a header)" if _looks_numeric(header) else ""
        delimiter = next((d for d in (";", "\t", "|") if len(header) < len(features) and any(d in n for n in header)),
                         None)
        if delimiter is not None:
            hint = f" (the header is split by {delimiter!r}, not commas: write the file comma-separated)"
        raise InputError(f"{path}: missing column{'s' * (len(missing) > 1)} {_name_list(missing)}{hint}; "
                         f"the file needs all {len(features)} feature columns (any order)")
    if labelled and LABEL not in header:
        raise InputError(f"{path}: no {LABEL} column; pass a labelled file such as training.csv.gz")
    known = set(features) | {LABEL, ID}
    extra = [n for n in header if n not in known]
    if extra and warn_extra:
        print(f"lhcbpid: warning: {path}: ignoring {len(extra)} extra column{'s' * (len(extra) > 1)}: "
              f"{_name_list(extra)}", file=sys.stderr)
    return _Layout(path=path, kind=kind, header=header, features=tuple(features),
                   with_label=LABEL in header and labelled is not False, with_id=ID in header)


def _looks_numeric(names: Sequence[str]) -> bool:
    """True if most header fields parse as numbers (a file without a header)."""
    def is_number(s: str) -> bool:
        try:
            float(s)
            return True
        except ValueError:
            return False

    return sum(map(is_number, names)) > len(names) / 2


def _column_types(layout: _Layout) -> dict[str, pa.DataType]:
    """Arrow types to parse each wanted CSV column as."""
    types: dict[str, pa.DataType] = {name: pa.float64() for name in layout.features}
    if layout.with_label:
        types[LABEL] = pa.string()
    if layout.with_id:
        types[ID] = pa.int64()
    return types


def _csv_options(layout: _Layout, types: dict[str, pa.DataType],
                 block_size: int | None = None) -> tuple[pacsv.ReadOptions, pacsv.ConvertOptions]:
    """pyarrow read and convert options for the wanted columns of a CSV file."""
    read = pacsv.ReadOptions(column_names=list(layout.header), skip_rows=1,
                             **({"block_size": block_size} if block_size else {}))
    convert = pacsv.ConvertOptions(column_types=types, include_columns=list(types), null_values=[""],
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    return read, convert


def _csv_input(layout: _Layout):
    """What pyarrow reads a CSV from: for gzip, ISA-L inflating in its own thread (twice as fast as zlib)."""
    if layout.kind == "csv.gz":
        return igzip_threaded.open(layout.path, "rb", threads=1)
    return nullcontext(str(layout.path))


#: What reading a broken file can raise: pyarrow's errors, and ISA-L's for truncated or corrupt gzip data.
_READ_ERRORS = (pa.ArrowInvalid, OSError, EOFError, isal_zlib.error)


def _read_table(layout: _Layout) -> pa.Table:
    """All wanted columns of a file as an Arrow table (CSV values already parsed)."""
    try:
        if layout.is_parquet:
            return pq.read_table(layout.path, columns=layout.columns)
        read, convert = _csv_options(layout, _column_types(layout))
        with _csv_input(layout) as source:
            return pacsv.read_csv(source, read_options=read, convert_options=convert)
    except _READ_ERRORS as e:
        raise _explain(layout, e) from None


def _record_batches(layout: _Layout, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Stream wanted columns of a file as Arrow record batches, memory bounded by the batch size."""
    try:
        if layout.is_parquet:
            yield from pq.ParquetFile(layout.path).iter_batches(batch_size=batch_rows, columns=layout.columns)
            return
        read, convert = _csv_options(layout, _column_types(layout), block_size=STREAM_BLOCK_BYTES)
        with _csv_input(layout) as source:
            yield from pacsv.open_csv(source, read_options=read, convert_options=convert)
    except _READ_ERRORS as e:
        raise _explain(layout, e) from None


def _rebatch(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Regroup record batches into tables of exactly `rows` rows (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


# --------------------------------------------------------------------------- error location


def _explain(layout: _Layout, e: BaseException) -> InputError:
    """Turn a pyarrow read failure into a one-line InputError naming the column, row and value."""
    detail = _first_line(e)
    if isinstance(e, OSError):
        return _read_error(layout.path, e)
    if "Expected" in detail and "columns, got" in detail:
        return _field_count_error(layout)
    match = re.search(r"In CSV column #(\d+)", detail)
    if match and int(match.group(1)) < len(layout.header):
        name = layout.header[int(match.group(1))]
        numeric = [c for c in layout.features + (ID,) * layout.with_id if c != name]
        for column in [name] + numeric:
            located = _first_bad_value(layout, column)
            if located is not None:
                return _bad_value_error(layout.path, column, *located)
        value = re.search(r"invalid value '(.*)'", detail)
        return _bad_value_error(layout.path, name, None, value.group(1) if value else "?")
    return _read_error(layout.path, e)


def _bad_value_error(path: Path, column: str, row: int | None, value: str) -> InputError:
    """The message for a value that is not a number (or, in ID, not an integer)."""
    where = f", row {row + 1:,} (line {row + 2:,})" if row is not None else ""
    kind = "an integer" if column == ID else "a number"
    if not value.strip():
        return InputError(f"{path}: column {column}{where} is empty; it needs {kind}: fix or remove that row")
    return InputError(f"{path}: column {column}{where}: {value[:40]!r} is not {kind}; fix or remove that row")


def _field_count_error(layout: _Layout) -> InputError:
    """Find the first CSV row whose field count differs from the header's."""
    expected = len(layout.header)
    try:
        with _text_stream(layout.path, layout.kind) as text:
            reader = csv.reader(text)
            next(reader, None)
            for row, fields in enumerate(reader):
                if len(fields) != expected and fields:
                    return InputError(f"{layout.path}: row {row + 1:,} (line {row + 2:,}) has {len(fields)} fields, "
                                      f"the header has {expected}; the file may be truncated: fix or remove that row")
    except (OSError, pa.ArrowException) as e:
        return _read_error(layout.path, e)
    return InputError(f"{layout.path}: a row has a different number of fields than the header ({expected}); "
                      f"fix the file")


def _first_failing_cast(values: pa.Array, target: pa.DataType) -> int | None:
    """Index of the first string that does not cast to `target`, by bisection (None if all cast)."""
    def casts(n: int) -> bool:
        try:
            pc.cast(values.slice(0, n), target)
            return True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False

    if casts(len(values)):
        return None
    lo, hi = 0, len(values)  # casts(lo) is True, casts(hi) is False
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if casts(mid) else (lo, mid)
    return lo


def _first_bad_value(layout: _Layout, column: str) -> tuple[int, str] | None:
    """(row, text) of the first value in a column that does not parse as its type; None if none is found."""
    target = pa.int64() if column == ID else pa.float64()
    offset = 0
    try:
        if layout.is_parquet:
            chunks = pq.ParquetFile(layout.path).iter_batches(columns=[column])
        else:
            only = _Layout(layout.path, layout.kind, layout.header, (), False, False)
            read, convert = _csv_options(only, {column: pa.string()})
            chunks = pacsv.open_csv(layout.path, read_options=read, convert_options=convert)
        for batch in chunks:
            values = batch.column(0)
            if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                text = pc.utf8_trim_whitespace(values.cast(pa.string())).fill_null("0")  # as the CSV parser trims
                bad = _first_failing_cast(text, target)
                if bad is not None:
                    return offset + bad, str(values[bad].as_py())
            offset += batch.num_rows
    except (pa.ArrowException, OSError):
        return None
    return None


# --------------------------------------------------------------------------- conversion


def _first_true(mask: np.ndarray) -> int:
    """Index of the first True in a boolean array."""
    return int(np.argmax(mask))


def _float_column(values: pa.ChunkedArray, layout: _Layout, name: str, offset: int) -> pa.ChunkedArray:
    """A feature column as numbers; InputError on missing or non-numeric values."""
    if values.null_count:
        row = offset + _first_true(values.is_null().to_numpy(zero_copy_only=False))
        raise InputError(f"{layout.path}: column {name}, row {row + 1:,} is empty; every feature needs a number "
                         f"(use -999 for 'no information')")
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        try:
            values = pc.cast(values, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            located = _first_bad_value(layout, name)
            row, value = located if located else (None, "?")
            raise _bad_value_error(layout.path, name, row, value) from None
    elif not (pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
        raise InputError(f"{layout.path}: column {name} has type {kind}, not numbers; write it as numbers")
    return values  # NaN and inf are caught once, on the float32 matrix (_convert)


def _dictionary_codes(values: pa.ChunkedArray) -> np.ndarray | None:
    """Class indices of a dictionary-encoded label column via its small dictionary; None if any label is unknown."""
    parts = []
    for chunk in values.chunks:
        mapping = pc.index_in(chunk.dictionary, value_set=pa.array(CLASSES))
        if mapping.null_count or chunk.indices.null_count:
            return None
        parts.append(mapping.to_numpy(zero_copy_only=False)[chunk.indices.to_numpy(zero_copy_only=False)])
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


def _label_column(values: pa.ChunkedArray, layout: _Layout, offset: int) -> np.ndarray:
    """Label names as int64 indices into CLASSES; InputError on an unknown label."""
    if pa.types.is_dictionary(values.type):
        fast = _dictionary_codes(values)
        if fast is not None:
            return fast
        values = values.cast(values.type.value_type)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise InputError(f"{layout.path}: column {LABEL} has type {values.type}; it must hold class names "
                         f"({', '.join(CLASSES)})")
    codes = pc.index_in(values, value_set=pa.array(CLASSES))
    if codes.null_count:
        row = _first_true(codes.is_null().to_numpy(zero_copy_only=False))
        label = values[row].as_py()
        same = [c for c in CLASSES if isinstance(label, str) and c.lower() == label.strip().lower()]
        hint = f" (labels are case-sensitive: write {same[0]!r})" if same else ""
        raise InputError(f"{layout.path}: row {offset + row + 1:,} has unknown {LABEL} {label!r}{hint}; "
                         f"valid labels are {', '.join(CLASSES)}")
    return codes.to_numpy(zero_copy_only=False).astype(np.int64)


def _id_column(values: pa.ChunkedArray, layout: _Layout, offset: int) -> np.ndarray:
    """The ID column as int64; InputError on empty or non-integer IDs."""
    if values.null_count:
        row = offset + _first_true(values.is_null().to_numpy(zero_copy_only=False))
        raise InputError(f"{layout.path}: column {ID}, row {row + 1:,} is empty; every row needs an integer ID")
    try:
        values = pc.cast(values, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        located = _first_bad_value(layout, ID)
        row, value = located if located else (None, "?")
        raise _bad_value_error(layout.path, ID, row, value) from None
    return values.to_numpy().astype(np.int64, copy=False)


def _feature_matrix(table: pa.Table, layout: _Layout, offset: int) -> np.ndarray:
    """C-contiguous float32 [rows, features] from one column per feature, each checked."""
    columns_first = np.empty((len(layout.features), table.num_rows), dtype=np.float32)
    with np.errstate(over="ignore"):
        for j, name in enumerate(layout.features):
            start = 0
            for chunk in _float_column(table.column(name), layout, name, offset).chunks:  # no concatenated copy
                columns_first[j, start:start + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
                start += len(chunk)
    return np.ascontiguousarray(columns_first.T)


def _cached_matrix(table: pa.Table, layout: _Layout) -> np.ndarray:
    """The float32 [rows, features] matrix stored row-major in the cache's fixed-size-binary column."""
    rows = table.column(_CACHE_MATRIX).combine_chunks()
    width = 4 * len(layout.features)
    if rows.null_count or rows.type != pa.binary(width):
        raise InputError(f"{layout.path}: damaged cache file; delete it")
    values = np.frombuffer(rows.buffers()[1], dtype="<f4", count=len(rows) * len(layout.features),
                           offset=rows.offset * width)
    return values.reshape(len(rows), len(layout.features)).astype(np.float32, copy=True)


def _convert(table: pa.Table, layout: _Layout, offset: int = 0) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(X float32 in feature order, y or None, ids or None) from a table of wanted columns, all values checked."""
    X = _cached_matrix(table, layout) if layout.kind == "cache" else _feature_matrix(table, layout, offset)
    if not np.isfinite(X).all():
        row, j = map(int, np.argwhere(~np.isfinite(X))[0])
        name = layout.features[j]
        value = float(table.column(name)[row].as_py()) if name in table.column_names else float(X[row, j])
        where = f"{layout.path}: column {name}, row {offset + row + 1:,}"
        if math.isfinite(value):
            raise InputError(f"{where} is too large for float32 (above 3.4e38); fix that value")
        raise InputError(f"{where} is {value!s:.4}; every feature needs a finite number (use -999 for 'no information')")
    y = _label_column(table.column(LABEL), layout, offset) if layout.with_label else None
    ids = _id_column(table.column(ID), layout, offset) if layout.with_id else None
    return X, y, ids


# --------------------------------------------------------------------------- parquet cache


def parquet_cache_dir() -> Path:
    """Where Parquet copies of large CSV files are kept."""
    return default_data_dir() / "parquet-cache"


def _cache_path(layout: _Layout) -> Path:
    """The cache file for this source file's current size and mtime and these columns."""
    source = layout.path.resolve()
    stat = source.stat()
    source_key = hashlib.sha256(str(source).encode()).hexdigest()[:12]
    content = json.dumps([PARQUET_CACHE_VERSION, stat.st_size, stat.st_mtime_ns, layout.features,
                          layout.with_label, layout.with_id])
    content_key = hashlib.sha256(content.encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", source.name)
    return parquet_cache_dir() / f"{stem}-{source_key}-{content_key}.parquet"


def _uses_cache(layout: _Layout) -> bool:
    """True for CSV sources large enough to be worth a Parquet copy."""
    return (layout.kind != "parquet" and bool(layout.features)
            and layout.path.stat().st_size >= PARQUET_CACHE_MIN_BYTES)


def _cache_layout(layout: _Layout, cache: Path) -> _Layout:
    """The layout of a cache file: the same columns, as Parquet."""
    header = (_CACHE_MATRIX,) + (LABEL,) * layout.with_label + (ID,) * layout.with_id
    return _Layout(cache, "cache", header, layout.features, layout.with_label, layout.with_id)


def _read_cache(layout: _Layout) -> Dataset | None:
    """The dataset from a valid cache file, or None (no cache, or an unreadable one)."""
    cache = _cache_path(layout)
    if not cache.is_file():
        return None
    stored = _cache_layout(layout, cache)
    try:
        X, y, ids = _convert(pq.read_table(cache, columns=stored.columns), stored)
    except (pa.ArrowException, OSError, InputError, KeyError):
        return None
    return Dataset(X=X, y=y, ids=ids, path=layout.path)


def _write_cache(layout: _Layout, data: Dataset) -> None:
    """Write the Parquet copy atomically and drop older copies of the same source; never fails the read."""
    try:
        cache = _cache_path(layout)
        cache.parent.mkdir(parents=True, exist_ok=True)
        matrix = np.ascontiguousarray(data.X, dtype="<f4")
        rows = pa.FixedSizeBinaryArray.from_buffers(pa.binary(matrix.shape[1] * 4), len(matrix),
                                                    [None, pa.py_buffer(matrix)])
        arrays = {_CACHE_MATRIX: rows}
        if data.y is not None:
            arrays[LABEL] = pa.DictionaryArray.from_arrays(pa.array(data.y.astype(np.int8)), pa.array(CLASSES))
        if data.ids is not None:
            arrays[ID] = pa.array(data.ids)
        with atomic_path(cache) as tmp:
            table = pa.table(arrays).replace_schema_metadata({"features": json.dumps(layout.features)})
            pq.write_table(table, tmp, compression="lz4", use_dictionary=[LABEL] if data.y is not None else False)
        prefix = cache.name.rsplit("-", 1)[0] + "-"
        for old in cache.parent.glob(f"{prefix}*.parquet"):
            if old != cache:
                old.unlink(missing_ok=True)
    except Exception as e:  # noqa: BLE001 - the cache is an optimisation; reading must go on
        print(f"lhcbpid: warning: could not write the Parquet cache for {layout.path} ({_first_line(e)})",
              file=sys.stderr)


# --------------------------------------------------------------------------- public reading API


def read_dataset(path: Path, features: Sequence[str] = FEATURES, labelled: bool | None = None) -> Dataset:
    """Read a .csv, .csv.gz or .parquet file into float32 features (by column name), labels and IDs."""
    layout = _layout(_existing_file(path), features, labelled)
    cached = _uses_cache(layout)
    if cached:
        hit = _read_cache(layout)
        if hit is not None:
            return hit
    table = _read_table(layout)
    if table.num_rows == 0:
        raise InputError(f"{layout.path} has a header but no data rows; pass a file with data")
    X, y, ids = _convert(table, layout)
    del table
    data = Dataset(X=X, y=y, ids=ids, path=layout.path)
    if cached:
        _write_cache(layout, data)
    return data


def iter_batches(path: Path, features: Sequence[str] = FEATURES,
                 batch_rows: int = 200_000) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """Stream (ids or None, float32 X) chunks of `batch_rows` rows with flat memory, checked like read_dataset."""
    if batch_rows < 1:
        raise InputError(f"batch size {batch_rows} must be at least 1; pass a positive --batch-rows")
    layout = _layout(_existing_file(path), features, labelled=False)
    source = layout
    if _uses_cache(layout):
        cache = _cache_path(layout)
        if cache.is_file():
            source = _cache_layout(layout, cache)
    offset = 0
    for table in _rebatch(_record_batches(source, batch_rows), batch_rows):
        X, _, ids = _convert(table, source, offset)
        offset += table.num_rows
        yield ids, X
    if offset == 0:
        raise InputError(f"{layout.path} has a header but no data rows; pass a file with data")


def read_labels(path: Path, ids: np.ndarray) -> np.ndarray:
    """Class indices for `ids` from a side file with columns ID,Label; InputError if an ID has no label."""
    side = read_dataset(path, features=(), labelled=True)
    if side.ids is None:
        raise InputError(f"{side.path}: no {ID} column; a labels file needs the columns {ID},{LABEL}")
    order = np.argsort(side.ids, kind="stable")
    sorted_ids = side.ids[order]
    if len(sorted_ids) > 1 and (np.diff(sorted_ids) == 0).any():
        dup = int(sorted_ids[1:][np.diff(sorted_ids) == 0][0])
        raise InputError(f"{side.path}: {ID} {dup} appears more than once; keep one label per ID")
    ids = np.asarray(ids, dtype=np.int64)
    where = np.searchsorted(sorted_ids, ids).clip(0, max(len(sorted_ids) - 1, 0))
    found = sorted_ids[where] == ids if len(sorted_ids) else np.zeros(len(ids), dtype=bool)
    if not found.all():
        missing = ids[~found]
        raise InputError(f"{side.path}: no label for {ID} {int(missing[0])} ({len(missing):,} of {len(ids):,} IDs "
                         f"missing); pass the labels file written with this data file")
    return side.y[order][where]


# --------------------------------------------------------------------------- split


@dataclass(frozen=True)
class Split:
    """Sorted row indices of the train, validation and test parts, and how they were made."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    fractions: tuple[float, float, float]
    seed: int

    def digest(self) -> str:
        """Short sha256 of the three index arrays (identical splits have identical digests)."""
        h = hashlib.sha256()
        for part in (self.train, self.validation, self.test):
            h.update(np.ascontiguousarray(part, dtype="<i8").tobytes())
            h.update(b"|")
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        """JSON-ready description: fractions, seed, sizes and digest."""
        return {"fractions": [float(f) for f in self.fractions], "seed": int(self.seed),
                "sizes": {"train": int(len(self.train)), "validation": int(len(self.validation)),
                          "test": int(len(self.test))},
                "digest": self.digest()}


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three positive fractions summing to 1; InputError otherwise."""
    values = tuple(float(f) for f in fractions)
    shown = " ".join(f"{f:g}" for f in values)
    fix = "give three positive numbers that sum to 1, for example --fractions 0.70 0.15 0.15"
    if len(values) != 3:
        raise InputError(f"split fractions {shown}: need exactly three (train, validation, test); {fix}")
    if not all(np.isfinite(values)) or min(values) <= 0:
        raise InputError(f"split fractions {shown}: each must be above 0; {fix}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise InputError(f"split fractions {shown} sum to {sum(values):g}, not 1; {fix}")
    return values  # type: ignore[return-value]


def split_dataset(y: np.ndarray, fractions: Sequence[float] = (0.70, 0.15, 0.15), seed: int = 42) -> Split:
    """Stratified, reproducible train/validation/test split of row indices by class."""
    fracs = _check_fractions(fractions)
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        n_train = int(round(len(rows) * fracs[0]))
        n_val = min(int(round(len(rows) * fracs[1])), len(rows) - n_train)
        for part, chunk in zip(parts, np.split(rows, [n_train, n_train + n_val])):
            part.append(chunk)
    train, validation, test = (np.sort(np.concatenate(p)).astype(np.int64) if p else np.empty(0, np.int64)
                               for p in parts)
    shown = " ".join(f"{f:g}" for f in fracs)
    absent = [c for k, c in enumerate(CLASSES) if not np.any(y == k)]
    if absent:  # y holds class indices: a class with no row leaves its test AUC undefined
        raise InputError(f"cannot split {len(y):,} rows: none has class {absent[0]}"
                         f"{f' (nor {len(absent) - 1} more)' if len(absent) > 1 else ''}; the model and its "
                         f"test AUCs need rows of every class ({', '.join(CLASSES)})")
    for name, part in (("train", train), ("validation", validation), ("test", test)):
        if len(part) == 0:
            raise InputError(f"cannot split {len(y):,} rows with fractions {shown}: "
                             f"the {name} part would be empty; use more rows or a larger {name} fraction")
    for label, chunks in zip(np.unique(y), zip(*parts)):  # stratified: every part holds every class of y
        for name, chunk in zip(("train", "validation", "test"), chunks):
            if len(chunk) == 0:
                shown_label = CLASSES[label] if np.issubdtype(type(label), np.integer) and 0 <= label < len(CLASSES) \
                    else label
                raise InputError(f"cannot split {len(y):,} rows with fractions {shown}: class {shown_label} has "
                                 f"{int(np.sum(y == label)):,} rows, so the {name} part would have none of it; "
                                 f"use more rows of every class")
    return Split(train=train, validation=validation, test=test, fractions=fracs, seed=int(seed))
