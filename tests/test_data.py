"""Reading files into arrays (by column name, with one-line errors), the Parquet cache, labels files and the split."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from lhcbpid import data
from lhcbpid.cli import main
from lhcbpid.data import iter_batches, read_dataset, read_labels, split_dataset
from lhcbpid.errors import InputError
from lhcbpid.schema import CLASSES, FEATURES, ID, LABEL, TRAINING_COLUMNS

ROWS = 60


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own data dir, so the Parquet cache never touches the user's."""
    monkeypatch.setenv("LHCBPID_DATA", str(tmp_path / "data-dir"))


def _frame(rows: int = ROWS, seed: int = 0, labelled: bool = True, ids: bool = False) -> dict[str, np.ndarray]:
    """Random columns in the real training order (Label) or test order (ID last)."""
    rng = np.random.default_rng(seed)
    columns = TRAINING_COLUMNS if labelled else FEATURES
    frame: dict[str, np.ndarray] = {}
    for name in columns:
        if name == LABEL:
            frame[name] = np.array(CLASSES)[rng.integers(0, len(CLASSES), rows)]
        else:
            frame[name] = np.round(rng.normal(0, 100, rows), 6)
    if ids:
        frame[ID] = np.arange(1000, 1000 + rows, dtype=np.int64)
    return frame


def _write(path, frame: dict[str, np.ndarray], order: list[str] | None = None):
    """Write columns with pyarrow as .csv, .csv.gz or .parquet (by suffix), in the given column order."""
    table = pa.table({name: frame[name] for name in (order or list(frame))})
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".gz":
        with pa.CompressedOutputStream(str(path), "gzip") as out:
            pacsv.write_csv(table, out)
    else:
        pacsv.write_csv(table, path)
    return path


def _csv_text(frame: dict[str, np.ndarray], newline: str = "\n") -> str:
    """The frame as plain CSV text, for hand-edited bad files."""
    names = list(frame)
    lines = [",".join(names)]
    for i in range(len(frame[names[0]])):
        lines.append(",".join(str(frame[n][i]) for n in names))
    return newline.join(lines) + newline


def _expected_X(frame) -> np.ndarray:
    return np.column_stack([frame[f] for f in FEATURES]).astype(np.float32)


# --------------------------------------------------------------------------- good files


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_reads_every_format(tmp_path, suffix):
    frame = _frame()
    d = read_dataset(_write(tmp_path / f"train{suffix}", frame))
    assert d.X.dtype == np.float32 and d.X.shape == (ROWS, 49) and d.X.flags.c_contiguous
    np.testing.assert_array_equal(d.X, _expected_X(frame))
    np.testing.assert_array_equal(d.y, [CLASSES.index(c) for c in frame[LABEL]])
    assert d.y.dtype == np.int64 and d.ids is None


def test_shuffled_columns_give_same_arrays(tmp_path):
    frame = _frame(ids=True)
    order = list(frame)
    shuffled = list(np.random.default_rng(1).permutation(order))
    a = read_dataset(_write(tmp_path / "a.csv", frame, order))
    b = read_dataset(_write(tmp_path / "b.csv", frame, shuffled))
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.ids, b.ids)
    assert a.ids.dtype == np.int64


def test_requested_feature_order(tmp_path):
    frame = _frame()
    wanted = ["DLLkaon", "TrackP"]
    d = read_dataset(_write(tmp_path / "a.csv", frame), features=wanted)
    np.testing.assert_array_equal(d.X, np.column_stack([frame[w] for w in wanted]).astype(np.float32))


def test_extra_column_warns_on_stderr(tmp_path, capsys):
    frame = _frame()
    frame["Comment"] = np.arange(ROWS)
    d = read_dataset(_write(tmp_path / "a.csv", frame))
    assert d.X.shape == (ROWS, 49)
    err = capsys.readouterr().err
    assert "warning" in err and "Comment" in err and "a.csv" in err


def test_bom_and_crlf_just_work(tmp_path):
    frame = _frame(rows=5)
    path = tmp_path / "windows.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _csv_text(frame, "\r\n").encode())
    d = read_dataset(path)
    np.testing.assert_array_equal(d.X, _expected_X(frame))
    np.testing.assert_array_equal(d.y, [CLASSES.index(c) for c in frame[LABEL]])


def test_test_file_has_ids_and_no_labels(tmp_path):
    frame = _frame(labelled=False, ids=True)
    d = read_dataset(_write(tmp_path / "test.csv.gz", frame))
    assert d.y is None
    np.testing.assert_array_equal(d.ids, frame[ID])


def test_labelled_false_ignores_label(tmp_path):
    d = read_dataset(_write(tmp_path / "a.csv", _frame()), labelled=False)
    assert d.y is None


# --------------------------------------------------------------------------- bad files


def _bad_csv(tmp_path, edit, name: str = "bad.csv") -> object:
    """A labelled CSV with one edit applied to row 3 (data row index 2)."""
    frame = {k: v.astype(object) for k, v in _frame(rows=6).items()}
    edit(frame)
    path = tmp_path / name
    path.write_text(_csv_text(frame))
    return path


def _error(path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        read_dataset(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_file(tmp_path):
    assert "no such file" in _error(tmp_path / "nope.csv")


def test_missing_column_is_named(tmp_path):
    frame = _frame()
    del frame["DLLkaon"]
    message = _error(_write(tmp_path / "a.csv", frame))
    assert "missing column DLLkaon" in message


def test_labelled_requires_label(tmp_path):
    assert "no Label column" in _error(_write(tmp_path / "t.csv", _frame(labelled=False)), labelled=True)


def test_non_numeric_value_names_column_row_and_value(tmp_path):
    def edit(frame):
        frame["EcalE"][2] = "abc"

    message = _error(_bad_csv(tmp_path, edit))
    assert "column EcalE" in message and "row 3" in message and "'abc'" in message


def test_non_numeric_value_in_gzip_and_parquet(tmp_path):
    frame = _frame(rows=30)
    bad = {k: v.astype(str) for k, v in frame.items()}
    bad["TrackPt"][17] = "1.2.3"
    for suffix in (".csv.gz", ".parquet"):
        message = _error(_write(tmp_path / f"bad{suffix}", bad))
        assert "column TrackPt" in message and "row 18" in message and "'1.2.3'" in message


def test_empty_value(tmp_path):
    def edit(frame):
        frame["PrsE"][2] = ""

    message = _error(_bad_csv(tmp_path, edit))
    assert "column PrsE" in message and "row 3" in message and "empty" in message


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_nan_and_inf(tmp_path, value):
    def edit(frame):
        frame["HcalE"][2] = value

    message = _error(_bad_csv(tmp_path, edit))
    assert "column HcalE" in message and "row 3" in message and "finite" in message


def test_unknown_label_lists_valid_ones(tmp_path):
    def edit(frame):
        frame[LABEL][2] = "Positron"

    message = _error(_bad_csv(tmp_path, edit))
    assert "row 3" in message and "'Positron'" in message
    assert all(c in message for c in CLASSES)


def test_header_only_and_empty(tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(TRAINING_COLUMNS) + "\n")
    assert "no data rows" in _error(header_only)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "empty" in _error(empty)
    empty_gz = tmp_path / "empty.csv.gz"
    empty_gz.write_bytes(gzip.compress(b""))
    assert "empty" in _error(empty_gz)


def test_truncated_and_corrupt_gzip(tmp_path):
    frame = _frame(rows=3000)
    good = _write(tmp_path / "good.csv.gz", frame).read_bytes()
    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes(good[: len(good) // 2])
    assert "truncated or corrupt" in _error(truncated)
    corrupt = tmp_path / "corrupt.csv.gz"
    corrupt.write_bytes(good[:300] + bytes(1000) + good[1300:])
    assert "truncated or corrupt" in _error(corrupt)


def test_short_row(tmp_path):
    path = tmp_path / "short.csv"
    text = _csv_text(_frame(rows=4))
    path.write_text(text + "1.0,2.0\n")
    message = _error(path)
    assert "row 5" in message and "2 fields" in message


def test_duplicated_column(tmp_path):
    path = tmp_path / "dup.csv"
    text = _csv_text(_frame(rows=3)).splitlines()
    path.write_text("\n".join([text[0] + ",TrackP"] + [line + ",1" for line in text[1:]]) + "\n")
    assert "TrackP appears more than once" in _error(path)


def test_not_parquet(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_text("hello\n")
    assert "not a Parquet file" in _error(path)


def test_iter_batches_same_errors(tmp_path):
    def edit(frame):
        frame["EcalE"][2] = "abc"

    path = _bad_csv(tmp_path, edit)
    with pytest.raises(InputError, match=r"column EcalE, row 3 .*'abc'"):
        list(iter_batches(path, batch_rows=2))


def test_bad_input_through_cli_exits_2(tmp_path, capsys, monkeypatch):
    """A bad --data file reaches the user as one line and exit 2 (through whichever command reads data)."""
    def edit(frame):
        frame["EcalE"][2] = "abc"

    path = _bad_csv(tmp_path, edit)

    def fake_train(**kwargs):
        read_dataset(kwargs["data"], labelled=True)

    import sys
    import types

    monkeypatch.setitem(sys.modules, "lhcbpid.train", types.SimpleNamespace(run_training=fake_train))
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lhcbpid train: error:") and "column EcalE" in err and "\n" not in err


# --------------------------------------------------------------------------- streaming


def test_iter_batches_matches_read(tmp_path):
    frame = _frame(rows=103, labelled=False, ids=True)
    path = _write(tmp_path / "t.csv.gz", frame)
    whole = read_dataset(path)
    chunks = list(iter_batches(path, batch_rows=10))
    assert [len(X) for _, X in chunks] == [10] * 10 + [3]
    np.testing.assert_array_equal(np.concatenate([X for _, X in chunks]), whole.X)
    np.testing.assert_array_equal(np.concatenate([i for i, _ in chunks]), whole.ids)


def test_iter_batches_without_ids(tmp_path):
    path = _write(tmp_path / "t.parquet", _frame(rows=25, labelled=False))
    chunks = list(iter_batches(path, batch_rows=10))
    assert all(ids is None for ids, _ in chunks) and sum(len(X) for _, X in chunks) == 25


# --------------------------------------------------------------------------- parquet cache


def test_parquet_cache_hit_and_invalidation(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "PARQUET_CACHE_MIN_BYTES", 1)
    frame = _frame(rows=50)
    path = _write(tmp_path / "train.csv.gz", frame)
    first = read_dataset(path)
    cached = list(data.parquet_cache_dir().glob("*.parquet"))
    assert len(cached) == 1

    calls = []
    monkeypatch.setattr(data.pacsv, "read_csv", lambda *a, **k: calls.append(1) or pytest.fail("CSV re-read"))
    second = read_dataset(path)
    np.testing.assert_array_equal(first.X, second.X)
    np.testing.assert_array_equal(first.y, second.y)
    assert second.path == path
    monkeypatch.undo()
    monkeypatch.setattr(data, "PARQUET_CACHE_MIN_BYTES", 1)
    monkeypatch.setenv("LHCBPID_DATA", str(tmp_path / "data-dir"))

    changed = _frame(rows=40, seed=7)
    _write(path, changed)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    third = read_dataset(path)
    np.testing.assert_array_equal(third.X, _expected_X(changed))
    assert len(list(data.parquet_cache_dir().glob("*.parquet"))) == 1, "the stale copy is removed"


def test_parquet_cache_used_by_iter_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "PARQUET_CACHE_MIN_BYTES", 1)
    frame = _frame(rows=30, labelled=False, ids=True)
    path = _write(tmp_path / "test.csv.gz", frame)
    whole = read_dataset(path)
    monkeypatch.setattr(data.pacsv, "open_csv", lambda *a, **k: pytest.fail("CSV re-read"))
    chunks = list(iter_batches(path, batch_rows=7))
    np.testing.assert_array_equal(np.concatenate([X for _, X in chunks]), whole.X)
    np.testing.assert_array_equal(np.concatenate([i for i, _ in chunks]), whole.ids)


def test_failing_cache_write_does_not_break_reading(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "PARQUET_CACHE_MIN_BYTES", 1)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setattr(data, "parquet_cache_dir", lambda: blocker / "cache")
    frame = _frame(rows=20)
    d = read_dataset(_write(tmp_path / "a.csv", frame))
    np.testing.assert_array_equal(d.X, _expected_X(frame))
    assert "could not write the Parquet cache" in capsys.readouterr().err


def test_corrupt_cache_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "PARQUET_CACHE_MIN_BYTES", 1)
    frame = _frame(rows=20)
    path = _write(tmp_path / "a.csv", frame)
    read_dataset(path)
    (cache,) = data.parquet_cache_dir().glob("*.parquet")
    cache.write_bytes(b"PAR1 garbage")
    np.testing.assert_array_equal(read_dataset(path).X, _expected_X(frame))


def test_small_files_are_not_cached(tmp_path):
    read_dataset(_write(tmp_path / "a.csv", _frame()))
    assert not data.parquet_cache_dir().exists()


# --------------------------------------------------------------------------- labels side file


def test_read_labels_aligns_by_id(tmp_path):
    ids = np.array([5, 3, 9, 1])
    side = tmp_path / "test.csv.labels.csv"
    side.write_text("ID,Label\n1,Pion\n3,Muon\n5,Ghost\n9,Proton\n")
    np.testing.assert_array_equal(read_labels(side, ids), [CLASSES.index(c) for c in ("Ghost", "Muon", "Proton", "Pion")])


def test_read_labels_missing_id(tmp_path):
    side = tmp_path / "labels.csv"
    side.write_text("ID,Label\n1,Pion\n")
    with pytest.raises(InputError, match="no label for ID 2"):
        read_labels(side, np.array([1, 2]))


def test_read_labels_needs_both_columns(tmp_path):
    side = tmp_path / "labels.csv"
    side.write_text("Label\nPion\n")
    with pytest.raises(InputError, match="no ID column"):
        read_labels(side, np.array([0]))


# --------------------------------------------------------------------------- split


def test_split_reproducible_and_stratified():
    y = np.repeat(np.arange(6), [1000, 2000, 500, 700, 900, 300])
    y = np.random.default_rng(0).permutation(y)
    a = split_dataset(y, seed=3)
    b = split_dataset(y, seed=3)
    c = split_dataset(y, seed=4)
    assert a.digest() == b.digest() and a.digest() != c.digest()
    for part in (a.train, a.validation, a.test):
        np.testing.assert_array_equal(part, np.sort(part))
        assert part.dtype == np.int64
    everything = np.concatenate([a.train, a.validation, a.test])
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(y)))
    overall = np.bincount(y) / len(y)
    for part, fraction in zip((a.train, a.validation, a.test), (0.70, 0.15, 0.15)):
        assert abs(len(part) / len(y) - fraction) < 0.002
        np.testing.assert_allclose(np.bincount(y[part], minlength=6) / len(part), overall, atol=0.002)


def test_split_describe_is_json_ready():
    import json

    s = split_dataset(np.arange(100) % 6, fractions=(0.6, 0.2, 0.2), seed=1)
    described = json.loads(json.dumps(s.describe()))
    assert described["seed"] == 1 and described["fractions"] == [0.6, 0.2, 0.2]
    assert sum(described["sizes"].values()) == 100 and described["digest"] == s.digest()


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.2), (0.5, 0.5, 0.0), (1.2, -0.1, -0.1), (0.5, 0.5)])
def test_split_bad_fractions(fractions):
    with pytest.raises(InputError, match="fractions"):
        split_dataset(np.arange(60) % 6, fractions=fractions)


def test_file_sha256(tmp_path):
    import hashlib

    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert data.file_sha256(path) == hashlib.sha256(b"abc").hexdigest()


def test_spaces_around_numbers_are_accepted_and_do_not_mislead_errors(tmp_path):
    frame = {k: v.astype(object) for k, v in _frame(rows=6).items()}
    frame["EcalE"][1] = " 12.5 "
    frame["EcalE"][4] = "oops"
    path = tmp_path / "spaces.csv"
    path.write_text(_csv_text(frame))
    message = _error(path)
    assert "row 5" in message and "'oops'" in message
    frame["EcalE"][4] = "3"
    path.write_text(_csv_text(frame))
    assert read_dataset(path).X[1, FEATURES.index("EcalE")] == np.float32(12.5)


def test_bad_input_through_real_train_command(tmp_path):
    """The real `lhcbpid train --data bad.csv` stops at reading: exit 2, one line, no output directory."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("lhcbpid.train") is None:
        pytest.skip("training extras not installed")

    def edit(frame):
        frame[LABEL][2] = "Positron"

    path = _bad_csv(tmp_path, edit)
    out = tmp_path / "out"
    env = {**os.environ, "LHCBPID_DATA": str(tmp_path / "data-dir"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "lhcbpid.cli", "train", "--data", str(path), "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("lhcbpid train: error:")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(errors) == 1 and "'Positron'" in errors[0] and "row 3" in errors[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()
