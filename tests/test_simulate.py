"""The simulator: schema, determinism, -999 pattern, preselection, balance, file formats, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from lhcbpid import schema, simulate
from lhcbpid.errors import InputError

ROWS = 3_000


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return simulate.simulate(ROWS, seed=7)


def column(x: np.ndarray, name: str) -> np.ndarray:
    return x[:, schema.feature_index(name)]


def read_back(path: Path):
    if path.name.endswith(".parquet"):
        return pq.read_table(path)
    return pacsv.read_csv(path)


def test_shapes_and_dtypes(data):
    x, y = data
    assert x.shape == (ROWS, len(schema.FEATURES)) and x.dtype == np.float32
    assert y.shape == (ROWS,) and y.dtype == np.int64
    assert np.isfinite(x).all()


def test_classes_balanced_and_shuffled(data):
    _, y = data
    counts = np.bincount(y, minlength=len(schema.CLASSES))
    assert counts.max() - counts.min() <= 1
    assert len(np.unique(y[:60])) == len(schema.CLASSES)
    assert not np.array_equal(y[:12], np.arange(12) % 6)


def test_same_seed_identical_different_seed_differs(data):
    x, y = data
    x2, y2 = simulate.simulate(ROWS, seed=7)
    x3, y3 = simulate.simulate(ROWS, seed=8)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(x, x3)


def test_spd_values_and_pattern(data):
    x, _ = data
    spd = column(x, "SpdE")
    assert set(np.unique(spd)) <= {np.float32(-999.0), np.float32(0.0), np.float32(3.2)}
    assert np.array_equal(spd == -999.0, column(x, "FlagSpd") == 0)


@pytest.mark.parametrize("flag, columns", [
    ("FlagPrs", ("PrsE", "PrsDLLbeElectron")),
    ("FlagEcal", ("EcalE", "EcalDLLbeElectron", "EcalDLLbeMuon")),
    ("FlagHcal", ("HcalE", "HcalDLLbeElectron", "HcalDLLbeMuon")),
    ("FlagBrem", ("BremDLLbeElectron",)),
    ("MuonLooseFlag", ("MuonLLbeMuon", "MuonLLbeBCK")),
])
def test_sentinel_exactly_when_flag_says_no_information(data, flag, columns):
    x, _ = data
    off = column(x, flag) == 0
    for name in columns:
        assert np.array_equal(column(x, name) == -999.0, off), name


def test_rich_pattern(data):
    x, _ = data
    no_rich = (column(x, "FlagRICH1") == 0) & (column(x, "FlagRICH2") == 0)
    for name in ("RICH_DLLbeElectron", "RICH_DLLbeMuon", "RICH_DLLbeKaon", "RICH_DLLbeProton", "RICH_DLLbeBCK"):
        assert np.array_equal(column(x, name) == -999.0, no_rich), name
    p = column(x, "TrackP")
    for name, mass in (("RICHpFlagPion", 139.57), ("RICHpFlagKaon", 493.68), ("RICHpFlagProton", 938.27)):
        assert np.array_equal(column(x, name) == 1, ~no_rich & (p > 18.9 * mass)), name


def test_flags_are_zero_one_and_muon_flags_nested(data):
    x, _ = data
    for name in schema.ACCEPTANCE_FLAGS + schema.RICH_THRESHOLD_FLAGS + ("MuonFlag", "MuonLooseFlag"):
        assert set(np.unique(column(x, name))) <= {0.0, 1.0}, name
    assert np.all(column(x, "MuonFlag") <= column(x, "MuonLooseFlag"))
    assert np.all(column(x, "MuonLooseFlag") <= column(x, "FlagMuon"))


def test_some_ghosts_miss_every_subdetector(data):
    x, y = data
    detector = [n for n in schema.FEATURES if n not in schema.GROUPS["tracking"]
                and n not in schema.ACCEPTANCE_FLAGS + schema.RICH_THRESHOLD_FLAGS
                and n not in ("MuonFlag", "MuonLooseFlag")]
    blind = np.all(x[:, [schema.feature_index(n) for n in detector]] == -999.0, axis=1)
    assert blind.any()
    assert np.mean(y[blind] == schema.CLASSES.index("Ghost")) > 0.8  # a few soft real tracks miss too


def test_preselection_cuts(data):
    x, _ = data
    assert column(x, "TrackP").min() > 1100
    assert column(x, "GhostProbability").max() < 0.4
    assert column(x, "TrackQualityPerNDoF").max() < 4
    assert np.all(column(x, "TrackPt") <= column(x, "TrackP"))


def test_zero_spike_present(data):
    x, _ = data
    prs = column(x, "PrsE")
    assert np.any((np.abs(prs) < 1e-4) & (prs != 0))


def test_training_csv_gz_columns_labels_and_bytes(tmp_path):
    path = tmp_path / "training.csv.gz"
    simulate.write_simulated(path, rows=600, seed=3, kind="training")
    table = read_back(path)
    assert tuple(table.column_names) == schema.TRAINING_COLUMNS
    assert table.num_rows == 600
    x, y = simulate.simulate(600, seed=3)
    labels = table.column(schema.LABEL).to_pylist()
    assert labels == [schema.CLASSES[i] for i in y]
    np.testing.assert_allclose(table.column("TrackP").to_numpy(), x[:, schema.feature_index("TrackP")], rtol=1e-6)
    again = tmp_path / "again.csv.gz"
    simulate.write_simulated(again, rows=600, seed=3, kind="training")
    assert path.read_bytes() == again.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.csv.gz", "training.csv.gz"]


def test_test_kind_parquet_id_last_and_labels_file(tmp_path):
    path = tmp_path / "test.parquet"
    simulate.write_simulated(path, rows=500, seed=4, kind="test")
    table = read_back(path)
    assert tuple(table.column_names) == schema.TEST_COLUMNS
    assert table.column_names[-1] == "ID"
    assert table.column("ID").to_pylist() == list(range(500))
    labels = pacsv.read_csv(Path(f"{path}.labels.csv"))
    assert labels.column_names == ["ID", "Label"]
    assert labels.column("ID").to_pylist() == list(range(500))
    _, y = simulate.simulate(500, seed=4)
    assert labels.column("Label").to_pylist() == [schema.CLASSES[i] for i in y]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.parquet", "test.parquet.labels.csv"]


def test_plain_csv_readable(tmp_path):
    path = tmp_path / "small.csv"
    simulate.write_simulated(path, rows=50, seed=1, kind="training")
    assert read_back(path).num_rows == 50


@pytest.mark.parametrize("rows", [0, -5])
def test_bad_rows_is_input_error(rows, tmp_path):
    with pytest.raises(InputError):
        simulate.simulate(rows, seed=1)
    with pytest.raises(InputError):
        simulate.write_simulated(tmp_path / "x.csv", rows=rows, seed=1, kind="training")
    assert list(tmp_path.iterdir()) == []


def test_bad_suffix_kind_and_directory_are_input_errors(tmp_path):
    with pytest.raises(InputError, match=r"\.csv"):
        simulate.write_simulated(tmp_path / "x.json", rows=10, seed=1, kind="training")
    with pytest.raises(InputError, match="kind"):
        simulate.write_simulated(tmp_path / "x.csv", rows=10, seed=1, kind="validation")
    with pytest.raises(InputError, match="directory"):
        simulate.write_simulated(tmp_path / "missing" / "x.csv", rows=10, seed=1, kind="training")


def test_statistics_checks_table(data):
    x, y = data
    checks = simulate.statistics_checks(x, y)
    names = [c[0] for c in checks]
    assert "rate MuonFlag" in names and "-999 share MuonLL" in names and "TrackP q50" in names
    by_name = {c[0]: c for c in checks}
    for name in ("SpdE values", "max GhostProbability", "max TrackQualityPerNDoF", "class count spread (rows)"):
        assert by_name[name][3], name
    text = simulate.format_checks(checks + [("made up", "1 +- 0", 2.0, False)])
    assert "FAIL" in text and "pass" in text and text.splitlines()[-1].endswith("targets pass")


def test_statistics_roughly_calibrated():
    x, y = simulate.simulate(30_000, seed=11)
    failed = [c for c in simulate.statistics_checks(x, y) if not c[3]]
    assert failed == []
