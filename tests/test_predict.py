"""Predicting with an ONNX model: numbers, column matching, errors through the CLI, output formats, `info`."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from onnx import TensorProto, helper, numpy_helper

from lhcbpid.cli import main
from lhcbpid.predict import SUBMISSION_CLASSES, describe_model, fixed_decimals, load_model, predict_file, predict_proba
from lhcbpid.schema import CLASSES, FEATURES, ID

ROWS = 57
METRICS = {"test_auc": {c: 0.9 for c in CLASSES}, "log_loss": 0.56}


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LHCBPID_DATA", str(tmp_path / "data-dir"))


def _weights(n_in: int = 49, n_out: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.05, (n_in, n_out)).astype(np.float32), rng.normal(0, 0.5, n_out).astype(np.float32)


def make_model(path: Path, features=FEATURES, classes=CLASSES, width: int | None = None, seed: int = 0,
               metadata: dict | None = None) -> Path:
    """A softmax(X W + b) model with the lhcbpid contract: input `input` [N, 49], output `probabilities` [N, 6]."""
    width = width or len(features)
    W, b = _weights(width, len(classes), seed)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["logits0"]),
         helper.make_node("Add", ["logits0", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "pid",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(classes)])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="lhcbpid-test")
    props = {"feature_names": json.dumps(list(features)), "class_names": json.dumps(list(classes)),
             "metrics": json.dumps(METRICS), "split": json.dumps({"seed": 42, "digest": "abc"}),
             "data_sha256": json.dumps("f" * 64), "simulated": json.dumps(True), "lhcbpid_version": json.dumps("0.1.0")}
    props.update(metadata or {})
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def reference_proba(X: np.ndarray, seed: int = 0) -> np.ndarray:
    W, b = _weights(X.shape[1], 6, seed)
    logits = X.astype(np.float64) @ W.astype(np.float64) + b
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_test_file(path: Path, rows: int = ROWS, seed: int = 1, order=None, with_id: bool = True,
                   edit=None) -> tuple[Path, np.ndarray]:
    """A test file (features then ID last, unless `order` says otherwise) and its float32 feature matrix."""
    rng = np.random.default_rng(seed)
    X = np.round(rng.normal(0, 20, (rows, len(FEATURES))), 6)
    columns: dict[str, object] = {name: X[:, j] for j, name in enumerate(FEATURES)}
    if with_id:
        columns[ID] = np.arange(500, 500 + rows, dtype=np.int64)
    if edit:
        columns = edit(columns)
    names = order or list(columns)
    table = pa.table({n: columns[n] for n in names})
    if path.name.endswith(".gz"):
        with pa.CompressedOutputStream(str(path), "gzip") as out:
            pacsv.write_csv(table, out)
    else:
        pacsv.write_csv(table, path)
    return path, X.astype(np.float32)


def read_output(path: Path) -> pa.Table:
    return pacsv.read_csv(path)


def _probabilities(table: pa.Table, classes=CLASSES) -> np.ndarray:
    return np.column_stack([table.column(c).to_numpy() for c in classes]).astype(np.float32)


def _no_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


# --------------------------------------------------------------------------- numbers


def test_predict_proba_matches_numpy(tmp_path):
    session, meta = load_model(make_model(tmp_path / "m.onnx"))
    _, X = make_test_file(tmp_path / "t.csv")
    P = predict_proba(session, X)
    assert P.dtype == np.float32 and P.shape == (ROWS, 6)
    np.testing.assert_allclose(P, reference_proba(X), atol=2e-6)
    assert meta["feature_names"] == list(FEATURES) and meta["class_names"] == list(CLASSES)
    assert meta["metrics"] == METRICS and meta["simulated"] is True


def test_predict_file_matches_numpy(tmp_path):
    model = make_model(tmp_path / "m.onnx")
    data, X = make_test_file(tmp_path / "t.csv.gz")
    predict_file(model, data, tmp_path / "out.csv")
    table = read_output(tmp_path / "out.csv")
    assert table.column_names == [ID, *CLASSES]
    np.testing.assert_array_equal(table.column(ID).to_numpy(), np.arange(500, 500 + ROWS))
    np.testing.assert_allclose(_probabilities(table), reference_proba(X), atol=2e-6)


def test_shuffled_columns_give_identical_output(tmp_path):
    model = make_model(tmp_path / "m.onnx")
    shuffled = list(np.random.default_rng(5).permutation([*FEATURES, ID]))
    a, _ = make_test_file(tmp_path / "a.csv")
    b, _ = make_test_file(tmp_path / "b.csv", order=shuffled)
    predict_file(model, a, tmp_path / "a.out.csv")
    predict_file(model, b, tmp_path / "b.out.csv")
    assert (tmp_path / "a.out.csv").read_bytes() == (tmp_path / "b.out.csv").read_bytes()


def test_model_feature_order_is_respected(tmp_path):
    reordered = list(reversed(FEATURES))
    model = make_model(tmp_path / "m.onnx", features=reordered)
    data, X = make_test_file(tmp_path / "t.csv")
    predict_file(model, data, tmp_path / "out.csv")
    np.testing.assert_allclose(_probabilities(read_output(tmp_path / "out.csv")), reference_proba(X[:, ::-1]),
                               atol=2e-6)


def test_chunked_output_equals_one_shot(tmp_path):
    model = make_model(tmp_path / "m.onnx")
    data, _ = make_test_file(tmp_path / "t.csv.gz")
    predict_file(model, data, tmp_path / "chunked.csv", batch_rows=7)
    predict_file(model, data, tmp_path / "whole.csv")
    assert (tmp_path / "chunked.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_without_id_column_ids_are_row_numbers(tmp_path):
    model = make_model(tmp_path / "m.onnx")
    data, _ = make_test_file(tmp_path / "t.csv", with_id=False)
    predict_file(model, data, tmp_path / "out.csv", batch_rows=10)
    np.testing.assert_array_equal(read_output(tmp_path / "out.csv").column(ID).to_numpy(), np.arange(ROWS))


def test_gz_output_name_gives_gzip(tmp_path):
    model = make_model(tmp_path / "m.onnx")
    data, _ = make_test_file(tmp_path / "t.csv")
    predict_file(model, data, tmp_path / "out.csv.gz")
    raw = (tmp_path / "out.csv.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert gzip.decompress(raw).startswith(b"ID,Electron,Ghost,Kaon,Muon,Pion,Proton\n")


def test_submission_format(tmp_path):
    model = make_model(tmp_path / "m.onnx")
    data, X = make_test_file(tmp_path / "t.csv")
    assert main(["predict", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "sub.csv.gz"),
                 "--format", "submission"]) == 0
    raw = (tmp_path / "sub.csv.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    lines = gzip.decompress(raw).decode().splitlines()
    assert lines[0] == "ID,Ghost,Electron,Muon,Pion,Kaon,Proton"
    assert len(lines) == ROWS + 1
    number = re.compile(r"^\d\.\d{5}$")
    expected = reference_proba(X)
    for i, line in enumerate(lines[1:]):
        fields = line.split(",")
        assert fields[0] == str(500 + i)
        assert all(number.match(f) for f in fields[1:]), line
        got = np.array([float(f) for f in fields[1:]])
        want = expected[i, [CLASSES.index(c) for c in SUBMISSION_CLASSES]]
        np.testing.assert_allclose(got, want, atol=5e-6 + 1e-6)


def test_submission_name_gets_gz(tmp_path, capsys):
    model = make_model(tmp_path / "m.onnx")
    data, _ = make_test_file(tmp_path / "t.csv")
    predict_file(model, data, tmp_path / "sub.csv", submission=True)
    assert (tmp_path / "sub.csv.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert not (tmp_path / "sub.csv").exists()


def test_fixed_decimals():
    values = np.array([0.0, 1.0, 0.123454, 0.123456, 1e-7, 0.999996, -0.5, 12.25])
    assert fixed_decimals(values, 5).to_pylist() == ["0.00000", "1.00000", "0.12345", "0.12346", "0.00000",
                                                     "1.00000", "-0.50000", "12.25000"]


def test_homework_consumer_contract(tmp_path):
    """Read a test file in the real column order (ID last) with ID as index, feed the other 49 as one float32 matrix
    to the first input: the same probabilities as predict_file."""
    import onnxruntime as ort

    model = make_model(tmp_path / "m.onnx")
    data, _ = make_test_file(tmp_path / "test.csv.gz", order=[*FEATURES, ID])
    table = pacsv.read_csv(data)
    assert table.column_names[-1] == ID
    index = table.column(ID).to_numpy()
    X = np.column_stack([table.column(c).to_numpy() for c in table.column_names if c != ID]).astype(np.float32)
    session = ort.InferenceSession(str(model))
    consumer = session.run(None, {session.get_inputs()[0].name: X})[0]
    predict_file(model, data, tmp_path / "out.csv")
    ours = read_output(tmp_path / "out.csv")
    np.testing.assert_array_equal(ours.column(ID).to_numpy(), index)
    np.testing.assert_array_equal(_probabilities(ours), consumer)


# --------------------------------------------------------------------------- errors through the CLI


def _predict_exit(tmp_path, model, data, capsys, *extra) -> str:
    out = tmp_path / "out" / "pred.csv"
    out.parent.mkdir(exist_ok=True)
    code = main(["predict", "--model", str(model), "--data", str(data), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert not out.exists() and _no_leftovers(out.parent) == []
    assert err.startswith("lhcbpid predict: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_missing_column_exit_2(tmp_path, capsys):
    model = make_model(tmp_path / "m.onnx")

    def drop(columns):
        del columns["DLLkaon"]
        return columns

    data, _ = make_test_file(tmp_path / "t.csv", edit=drop)
    assert "missing column DLLkaon" in _predict_exit(tmp_path, model, data, capsys)


def test_text_in_number_column_exit_2(tmp_path, capsys):
    model = make_model(tmp_path / "m.onnx")

    def text(columns):
        values = columns["EcalE"].astype(str)
        values[40] = "n/a"
        columns["EcalE"] = values
        return columns

    data, _ = make_test_file(tmp_path / "t.csv", edit=text)
    err = _predict_exit(tmp_path, model, data, capsys, "--batch-rows", "10")
    assert "column EcalE" in err and "row 41" in err and "'n/a'" in err


def test_error_mid_stream_keeps_previous_output(tmp_path, capsys):
    model = make_model(tmp_path / "m.onnx")

    def nan(columns):
        columns["HcalE"][50] = np.nan
        return columns

    data, _ = make_test_file(tmp_path / "t.csv", edit=nan)
    out = tmp_path / "pred.csv"
    out.write_text("previous\n")
    assert main(["predict", "--model", str(model), "--data", str(data), "--out", str(out), "--batch-rows", "8"]) == 2
    assert "row 51" in capsys.readouterr().err
    assert out.read_text() == "previous\n"
    assert _no_leftovers(tmp_path) == []


def test_not_onnx_exit_2(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    model.write_text("this is not a model\n")
    data, _ = make_test_file(tmp_path / "t.csv")
    assert "not a valid ONNX model" in _predict_exit(tmp_path, model, data, capsys)


def test_truncated_onnx_exit_2(tmp_path, capsys):
    good = make_model(tmp_path / "good.onnx").read_bytes()
    model = tmp_path / "m.onnx"
    model.write_bytes(good[: len(good) // 2])
    data, _ = make_test_file(tmp_path / "t.csv")
    assert "not a valid ONNX model" in _predict_exit(tmp_path, model, data, capsys)


def test_missing_model_exit_2(tmp_path, capsys):
    data, _ = make_test_file(tmp_path / "t.csv")
    assert "no such model file" in _predict_exit(tmp_path, tmp_path / "nope.onnx", data, capsys)


def test_model_with_other_feature_names_exit_2(tmp_path, capsys):
    model = make_model(tmp_path / "m.onnx", features=[*FEATURES[:-1], "RICH_DLLbePion"])
    data, _ = make_test_file(tmp_path / "t.csv")
    assert "missing column RICH_DLLbePion" in _predict_exit(tmp_path, model, data, capsys)


def test_model_input_width_differs_exit_2(tmp_path, capsys):
    model = make_model(tmp_path / "m.onnx", width=48)  # input [N, 48] but 49 feature_names
    data, _ = make_test_file(tmp_path / "t.csv")
    assert "has 48 columns but feature_names lists 49" in _predict_exit(tmp_path, model, data, capsys)


def test_model_without_names_must_be_49_wide(tmp_path, capsys):
    model = make_model(tmp_path / "m.onnx", width=48, features=FEATURES[:48])
    proto = onnx.load(str(model))
    del proto.metadata_props[:]
    onnx.save(proto, str(model))
    data, _ = make_test_file(tmp_path / "t.csv")
    assert "48 columns and no feature_names" in _predict_exit(tmp_path, model, data, capsys)


def test_bad_feature_names_metadata_exit_2(tmp_path, capsys):
    model = make_model(tmp_path / "m.onnx", metadata={"feature_names": "TrackP,TrackPt"})
    data, _ = make_test_file(tmp_path / "t.csv")
    assert "not a JSON list" in _predict_exit(tmp_path, model, data, capsys)


def test_missing_data_file_exit_2(tmp_path, capsys):
    model = make_model(tmp_path / "m.onnx")
    assert "no such file" in _predict_exit(tmp_path, model, tmp_path / "nope.csv", capsys)


def test_default_data_without_network_exit_2(tmp_path, capsys, monkeypatch):
    import socket

    from lhcbpid import data as data_module

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/test.csv.gz"
    monkeypatch.setattr(data_module, "URLS", {"training": (url,), "test": (url,)})
    model = make_model(tmp_path / "m.onnx")
    out = tmp_path / "pred.csv"
    code = main(["predict", "--model", str(model), "--out", str(out), "--data-dir", str(tmp_path / "dl")])
    err = capsys.readouterr().err
    assert code == 2 and "--data PATH" in err and url in err and not out.exists()


# --------------------------------------------------------------------------- info


def test_info_prints_classes_features_and_metadata(tmp_path, capsys):
    model = make_model(tmp_path / "m.onnx")
    assert main(["info", "--model", str(model)]) == 0
    text = capsys.readouterr().out
    assert "classes (6): Electron, Ghost, Kaon, Muon, Pion, Proton" in text
    assert all(name in text for name in FEATURES)
    assert "input: float32 [N, 49]" in text and "probabilities: float32 [N, 6]" in text
    assert '"log_loss": 0.56' in text and "data_sha256" in text and "lhcbpid_version: 0.1.0" in text
    assert text.index(" 0 TrackP") < text.index("48 RICH_DLLbeProton")


def test_info_on_bad_model_exit_2(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x07garbage")
    assert main(["info", "--model", str(model)]) == 2
    assert "lhcbpid info: error:" in capsys.readouterr().err


def test_describe_model_without_metadata(tmp_path):
    model = make_model(tmp_path / "m.onnx")
    proto = onnx.load(str(model))
    del proto.metadata_props[:]
    onnx.save(proto, str(model))
    text = describe_model(model)
    assert "assumed lhcbpid order" in text and "metadata: (none" in text


# --------------------------------------------------------------------------- no tensorflow


def test_predict_never_imports_tensorflow(tmp_path):
    model = make_model(tmp_path / "m.onnx")
    data, _ = make_test_file(tmp_path / "t.csv")
    out = tmp_path / "out.csv"
    code = (
        "import sys\n"
        "import lhcbpid.predict\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "from lhcbpid.cli import main\n"
        f"assert main(['predict', '--model', {str(model)!r}, '--data', {str(data)!r}, '--out', {str(out)!r}]) == 0\n"
        f"assert main(['info', '--model', {str(model)!r}]) == 0\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "LHCBPID_DATA": str(tmp_path / "data-dir")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert read_output(out).num_rows == ROWS


def test_predict_proba_in_slices_equals_one_call(tmp_path, monkeypatch):
    import lhcbpid.predict as predict_module

    session, _ = load_model(make_model(tmp_path / "m.onnx"))
    _, X = make_test_file(tmp_path / "t.csv")
    whole = predict_proba(session, X)
    monkeypatch.setattr(predict_module, "INFERENCE_ROWS", 5)
    monkeypatch.setattr(predict_module, "MIN_SLICE_ROWS", 1)  # 12 slices of 4-5 rows, run on parallel threads
    np.testing.assert_array_equal(predict_proba(session, X), whole)


def test_read_ahead_keeps_order_and_raises_the_producers_error():
    from lhcbpid.errors import InputError
    from lhcbpid.predict import read_ahead

    assert list(read_ahead(iter(range(100)), depth=3)) == list(range(100))

    def failing():
        yield 1
        raise InputError("bad row 2")

    got = []
    with pytest.raises(InputError, match="bad row 2"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == [1]


def test_read_ahead_stops_reading_when_the_consumer_stops():
    import threading

    from lhcbpid.predict import read_ahead

    produced = []

    def numbers():
        for i in range(1000):
            produced.append(i)
            yield i

    for item in read_ahead(numbers(), depth=2):
        if item == 3:
            break
    assert len(produced) <= 3 + 1 + 2 + 1  # the item in hand, the queue, one being offered
    assert not any(t.name == "lhcbpid-reader" for t in threading.enumerate())


def test_predict_many_batches_keeps_row_order(tmp_path):
    model = make_model(tmp_path / "m.onnx")
    data, X = make_test_file(tmp_path / "t.csv")
    out = tmp_path / "p.csv.gz"
    predict_file(model, data, out, batch_rows=4)  # 15 batches through the reader and writer threads
    table = read_output(out)
    session, _ = load_model(model)
    np.testing.assert_array_equal(table.column(ID).to_numpy(), np.arange(500, 500 + ROWS))
    np.testing.assert_allclose(_probabilities(table), predict_proba(session, X), rtol=1e-6)
