"""Properties checked on many generated inputs (hypothesis): column order never matters, no input breaks the model.

(a) Reading: any permutation of a small CSV's columns gives the same arrays and, with the trained model, the
    same probabilities.
(b) Preprocessing: any row with -999 ("no information") in any subset of the 49 columns and arbitrary finite
    values elsewhere (0, +-1e30 and everything between) gives finite probabilities summing to 1 in the shipped
    ONNX model, and finite outputs of the Keras preprocessing layer.
(c) No file a user passes is ever loaded with a format that can run code (pickle and the like).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lhcbpid.data import read_dataset
from lhcbpid.predict import load_model, predict_proba, predict_file
from lhcbpid.schema import CLASSES, FEATURES, ID, LABEL, SENTINEL, TRAINING_COLUMNS

ROWS = 7
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- (a) column order


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> tuple[list[str], list[list[str]], Path]:
    """A small labelled file with an ID column: header, rows as text, and the file in the real order."""
    rng = np.random.default_rng(8)
    header = [*TRAINING_COLUMNS, ID]
    rows = []
    for i in range(ROWS):
        values = rng.normal(0, 50, len(header)).round(4).astype(str).tolist()
        values[header.index(LABEL)] = CLASSES[i % len(CLASSES)]
        values[header.index(ID)] = str(100 + i)
        values[header.index("DLLkaon")] = str(SENTINEL)
        rows.append(values)
    path = tmp_path_factory.mktemp("properties") / "small.csv"
    path.write_text(_csv(header, rows, range(len(header))))
    return header, rows, path


def _csv(header: list[str], rows: list[list[str]], order) -> str:
    order = list(order)
    return "\n".join(",".join(r[i] for i in order) for r in [header, *rows]) + "\n"


@SETTINGS
@given(order=st.permutations(range(len(TRAINING_COLUMNS) + 1)))
def test_any_column_order_reads_the_same_and_predicts_the_same(order, small_csv, trained):
    header, rows, original = small_csv
    reference = read_dataset(original)
    session, _ = load_model(trained / "particles.onnx")
    with tempfile.TemporaryDirectory() as directory:
        shuffled = Path(directory) / "shuffled.csv"
        shuffled.write_text(_csv(header, rows, order))
        got = read_dataset(shuffled)
    np.testing.assert_array_equal(got.X, reference.X)
    np.testing.assert_array_equal(got.y, reference.y)
    np.testing.assert_array_equal(got.ids, reference.ids)
    np.testing.assert_array_equal(predict_proba(session, got.X), predict_proba(session, reference.X))


@settings(max_examples=10, deadline=None)
@given(order=st.permutations(range(len(TRAINING_COLUMNS) + 1)))
def test_any_column_order_gives_the_same_predict_file(order, small_csv, trained):
    header, rows, original = small_csv
    model = trained / "particles.onnx"
    with tempfile.TemporaryDirectory() as directory:
        shuffled, out, expected = (Path(directory) / n for n in ("shuffled.csv", "p.csv", "expected.csv"))
        shuffled.write_text(_csv(header, rows, order))
        predict_file(model, original, expected)
        predict_file(model, shuffled, out)
        assert out.read_bytes() == expected.read_bytes()


# --------------------------------------------------------------------------- (b) any -999 pattern, any magnitude


HUGE = float(np.float32(1e30))
SPECIAL = st.sampled_from([float(np.float32(v)) for v in (0.0, -0.0, 1e30, -1e30, 1.0, -1.0, 1e-30, -1e-30,
                                                           SENTINEL, 999.0, 3.0e8)])
FINITE = st.floats(min_value=-HUGE, max_value=HUGE, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def rows_with_sentinels(draw) -> np.ndarray:
    """A few rows: values anywhere in +-1e30 (often 0, +-1e30), -999 in any subset of the 49 columns."""
    n = draw(st.integers(1, 4))
    values = draw(arrays(np.float32, (n, len(FEATURES)), elements=st.one_of(SPECIAL, FINITE)))
    missing = draw(arrays(np.bool_, (n, len(FEATURES))))
    return np.where(missing, np.float32(SENTINEL), values).astype(np.float32)


@pytest.fixture(scope="module")
def onnx_session(trained) -> ort.InferenceSession:
    return ort.InferenceSession(str(trained / "particles.onnx"), providers=["CPUExecutionProvider"])


@SETTINGS
@given(X=rows_with_sentinels())
def test_onnx_probabilities_finite_and_normalised(X, onnx_session):
    (P,) = onnx_session.run(["probabilities"], {"input": X})
    assert P.shape == (len(X), len(CLASSES))
    assert np.isfinite(P).all(), (X, P)
    assert (P >= 0).all()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_all_missing_and_all_zero_rows(onnx_session):
    """The corners hypothesis may not hit: every column -999, every column 0, every column +-1e30."""
    X = np.stack([np.full(len(FEATURES), v, dtype=np.float32) for v in (SENTINEL, 0.0, 1e30, -1e30)])
    (P,) = onnx_session.run(["probabilities"], {"input": X})
    assert np.isfinite(P).all()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_flag_values_near_the_float32_limit(onnx_session):
    """Found by a wider search than (b): flags of +-3.4e38 once summed to inf + -inf = NaN; flags are now clipped."""
    X = np.zeros((1, len(FEATURES)), dtype=np.float32)
    for name, sign in (("FlagSpd", -1), ("FlagPrs", 1), ("FlagBrem", -1), ("FlagMuon", 1)):
        X[0, FEATURES.index(name)] = sign * np.float32(3.4e38)
    (P,) = onnx_session.run(["probabilities"], {"input": X})
    assert np.isfinite(P).all(), P


@pytest.fixture(scope="module")
def feature_layer(simulated_training):
    """The Keras preprocessing layer with statistics fitted on simulated training data."""
    pytest.importorskip("tensorflow")
    from lhcbpid.features import PidFeatures, fit_statistics

    X = read_dataset(simulated_training, labelled=True).X[:2000]
    return PidFeatures(**fit_statistics(X))


@SETTINGS
@given(X=rows_with_sentinels())
def test_keras_feature_layer_output_finite(X, feature_layer):
    from lhcbpid.backend import keras

    Z = keras.ops.convert_to_numpy(feature_layer(X))
    assert Z.shape[0] == len(X)
    assert np.isfinite(Z).all(), (X, Z)


# --------------------------------------------------------------------------- (c) nothing that can run code


#: Loaders that can execute code from a file, and the one allowed use of a Keras loader: train.py loads back
#: the tool's own checkpoint (`--resume`, a directory train.py itself wrote into --out), never a user's file.
DANGEROUS = {
    "pickle load": re.compile(r"\b(c?pickle|dill|cloudpickle|marshal)\.(load|loads|Unpickler)\b|\bUnpickler\b"
                              r"|\bfrom (c?pickle|dill|cloudpickle|marshal) import\b|\bshelve\.open\b"),
    "joblib": re.compile(r"\bjoblib\b"),
    "np.load without allow_pickle=False": re.compile(r"\bnp\.load\((?![^)]*allow_pickle=False)"),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "torch.load": re.compile(r"\btorch\.load\b"),
    "yaml.load": re.compile(r"\byaml\.(unsafe_)?load\b"),
    "eval/exec": re.compile(r"(?<![\w.])(eval|exec)\s*\("),
    "keras load_model": re.compile(r"\b(models|saving)\.load_model\b|\bload_weights\s*\("),
    "pandas read_pickle": re.compile(r"\bread_pickle\b"),
}
ALLOWED = {("src/lhcbpid/train.py", "keras load_model")}


def _sources() -> list[Path]:
    return sorted([*(ROOT / "src").rglob("*.py"), *ROOT.glob("*.py"), *(ROOT / "benchmarks").glob("*.py")])


def test_no_code_executing_loader_reads_a_users_file():
    """No pickle/marshal/shelve loading, joblib, np.load without allow_pickle=False, torch.load, yaml.load, eval
    or exec anywhere in src/, the root scripts or benchmarks/.

    Allowed explicitly, by file: keras.models.load_model in src/lhcbpid/train.py, used only on the checkpoint
    train.py itself saved under --out for --resume (safe_mode stays on). Not flagged because they load nothing:
    benchmark.py's `pickle.dumps(model)` (it measures the size of a peer's model, never reads a pickle), and
    predict.py's own `load_model`, which opens ONNX with onnxruntime (a data format that cannot run code)."""
    found = []
    for path in _sources():
        relative = path.relative_to(ROOT).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for what, pattern in DANGEROUS.items():
                if pattern.search(code) and (relative, what) not in ALLOWED:
                    found.append(f"{relative}:{number}: {what}: {line.strip()}")
    assert found == [], "\n".join(found)
    keras_loads = [p for p in _sources() if "keras.models.load_model" in p.read_text()]
    assert [p.relative_to(ROOT).as_posix() for p in keras_loads] in ([], ["src/lhcbpid/train.py"])
    assert "safe_mode=False" not in "".join(p.read_text() for p in _sources())


def test_the_scan_would_catch_a_pickle_load():
    """The patterns are not vacuous."""
    for line in ("pickle.load(f)", "pickle.loads(b)", "from pickle import load", "np.load(path)",
                 "keras.models.load_model(path)", "np.load(path, allow_pickle=True)", "yaml.load(text)",
                 "torch.load(p)", "eval(text)", "exec(code)", "joblib.load(p)"):
        assert any(p.search(line) for p in DANGEROUS.values()), line
    assert not any(p.search("np.load(path, allow_pickle=False)") for p in DANGEROUS.values())
