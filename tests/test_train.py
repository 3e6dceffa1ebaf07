"""`lhcbpid train` end to end on small simulated data: the five deliverables, ONNX parity, reproducibility."""

import json

import numpy as np
import onnxruntime as ort
import pyarrow.csv as pacsv
import pytest

from lhcbpid.cli import main
from lhcbpid.data import read_dataset, split_dataset
from lhcbpid.evaluate import class_aucs
from lhcbpid.schema import CLASSES, FEATURES, ID

from conftest import QUICK_EPOCHS

DELIVERABLES = ("particles.onnx", "particles.json", "roc.png", "train.png", "confusion.png")


def test_writes_the_five_deliverables_and_nothing_half_written(trained):
    for name in DELIVERABLES + ("metrics.json",):
        assert (trained / name).stat().st_size > 0, name
    for name in ("roc.png", "train.png", "confusion.png"):
        assert (trained / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(trained.glob("*.tmp")) and not list(trained.glob(".*"))


def test_particles_json_has_exactly_the_homework_format(trained):
    document = json.loads((trained / "particles.json").read_text())
    assert list(document) == ["test_auc"]
    assert list(document["test_auc"]) == list(CLASSES)
    assert all(isinstance(v, float) and 0.5 < v <= 1.0 for v in document["test_auc"].values())


def test_onnx_contract_and_metadata(trained, simulated_training):
    session = ort.InferenceSession(str(trained / "particles.onnx"))
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1]) == ("input", "tensor(float)", 49)
    assert (out.name, out.type, out.shape[1]) == ("probabilities", "tensor(float)", 6)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["feature_names"]) == list(FEATURES)
    assert json.loads(meta["class_names"]) == list(CLASSES)
    assert json.loads(meta["split"])["seed"] == 5
    assert len(meta["data_sha256"]) == 64
    assert "SIMULATED" in meta["source"]


def test_onnx_reproduces_the_reported_test_aucs(trained, simulated_training):
    """particles.json is what the shipped ONNX file scores on the test split, not something else."""
    data = read_dataset(simulated_training, labelled=True)
    split = split_dataset(data.y, seed=5)
    session = ort.InferenceSession(str(trained / "particles.onnx"))
    P = session.run(None, {"input": data.X[split.test]})[0]
    assert np.allclose(P.sum(axis=1), 1.0, atol=1e-5)
    reported = json.loads((trained / "particles.json").read_text())["test_auc"]
    assert class_aucs(data.y[split.test], P) == pytest.approx(reported, abs=1e-6)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["onnx_max_abs_difference"] <= 1e-5
    assert metrics["split"] == split.describe()
    assert len(metrics["history"]["loss"]) == len(metrics["history"]["val_loss"]) <= QUICK_EPOCHS


def test_homework_consumer_contract(trained, simulated_test):
    """Read test.csv.gz with ID as index, feed the other 49 columns as one float32 matrix, read the first output."""
    table = pacsv.read_csv(simulated_test)
    assert table.column_names[-1] == ID
    X = np.column_stack([table[c].to_numpy() for c in table.column_names if c != ID]).astype(np.float32)
    session = ort.InferenceSession(str(trained / "particles.onnx"))
    P = session.run(None, {session.get_inputs()[0].name: X})[0]
    ours = read_dataset(simulated_test)
    expected = session.run(None, {"input": ours.X})[0]
    assert np.array_equal(P, expected)


def test_same_seed_gives_identical_results(tmp_path, simulated_training, trained):
    assert main(["train", "--data", str(simulated_training), "--out", str(tmp_path),
                 "--epochs", str(QUICK_EPOCHS), "--seed", "5"]) == 0
    assert (tmp_path / "particles.json").read_bytes() == (trained / "particles.json").read_bytes()
    X = read_dataset(simulated_training).X[:500]
    a = ort.InferenceSession(str(tmp_path / "particles.onnx")).run(None, {"input": X})[0]
    b = ort.InferenceSession(str(trained / "particles.onnx")).run(None, {"input": X})[0]
    assert np.array_equal(a, b)


def test_failed_onnx_check_writes_no_model(tmp_path, simulated_training, monkeypatch, capsys):
    monkeypatch.setattr("lhcbpid.export.TOLERANCE", -1.0)
    assert main(["train", "--data", str(simulated_training), "--out", str(tmp_path), "--epochs", "1"]) == 1
    assert "differs from Keras" in capsys.readouterr().err
    assert not (tmp_path / "particles.onnx").exists() and not list(tmp_path.glob("*.tmp"))


def test_search_chooses_on_validation_and_saves_its_history(tmp_path, simulated_training):
    assert main(["train", "--data", str(simulated_training), "--out", str(tmp_path), "--search",
                 "--trials", "2", "--epochs", "1"]) == 0
    search = json.loads((tmp_path / "search.json").read_text())
    assert len(search["trials"]) == 2 and all(t["value"] is not None for t in search["trials"])
    chosen = json.loads((tmp_path / "config.json").read_text())
    assert chosen == search["chosen"]
    best = min(search["trials"], key=lambda t: t["value"])
    assert all(chosen[k] == v for k, v in best["params"].items())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"] == chosen


def test_config_file_is_used(tmp_path, simulated_training):
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"width": 16, "depth": 1, "epochs": 1}))
    assert main(["train", "--data", str(simulated_training), "--out", str(tmp_path), "--config", str(config)]) == 0
    used = json.loads((tmp_path / "metrics.json").read_text())["config"]
    assert (used["width"], used["depth"], used["epochs"]) == (16, 1, 1)


@pytest.mark.parametrize("text, message", [("{not json", "cannot read"), ('{"widht": 3}', "unknown configuration key 'widht'")])
def test_bad_config_is_one_line_and_exit_2(tmp_path, simulated_training, capsys, text, message):
    config = tmp_path / "bad.json"
    config.write_text(text)
    assert main(["train", "--data", str(simulated_training), "--out", str(tmp_path / "out"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and str(config) in err
    assert not (tmp_path / "out").exists()


def test_missing_data_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope.csv.gz"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope.csv.gz" in err and err.count("\n") == 1


def test_resume_after_interrupt_reaches_the_uninterrupted_model(tmp_path, simulated_training, trained, monkeypatch):
    import lhcbpid.train as train

    save = train.save_checkpoint

    def save_then_interrupt(folder, model, best_weights, state):
        save(folder, model, best_weights, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    args = ["train", "--data", str(simulated_training), "--out", str(tmp_path), "--epochs", str(QUICK_EPOCHS), "--seed", "5"]
    monkeypatch.setattr(train, "save_checkpoint", save_then_interrupt)
    assert main(args) == 130
    assert not (tmp_path / "particles.onnx").exists()
    monkeypatch.setattr(train, "save_checkpoint", save)
    assert main(args + ["--resume"]) == 0
    assert (tmp_path / "particles.json").read_bytes() == (trained / "particles.json").read_bytes()
    assert not (tmp_path / train.CHECKPOINT_DIR).exists()


def test_resume_refuses_a_checkpoint_made_with_other_settings(tmp_path, simulated_training, monkeypatch, capsys):
    import lhcbpid.train as train

    def interrupt(folder, model, best_weights, state):
        train.save_checkpoint.__wrapped__(folder, model, best_weights, state)
        raise KeyboardInterrupt

    interrupt.__wrapped__ = train.save_checkpoint
    monkeypatch.setattr(train, "save_checkpoint", interrupt)
    args = ["train", "--data", str(simulated_training), "--out", str(tmp_path), "--epochs", "2"]
    assert main(args) == 130
    monkeypatch.undo()
    assert main(args + ["--seed", "6", "--resume"]) == 2
    assert "other data, split or settings" in capsys.readouterr().err
    assert main(["train", "--data", str(simulated_training), "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_sigterm_mid_training_keeps_earlier_deliverables(tmp_path, simulated_training):
    import os
    import signal
    import subprocess
    import sys
    import time

    earlier = {"particles.json": b'{"test_auc": {}}\n', "particles.onnx": b"earlier model"}
    for name, content in earlier.items():
        (tmp_path / name).write_bytes(content)
    process = subprocess.Popen([sys.executable, "-m", "lhcbpid.cli", "train", "--data", str(simulated_training),
                                "--out", str(tmp_path), "--epochs", "200", "--config", str(_slow_config(tmp_path))],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / ".lhcbpid-checkpoint" / "latest").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "--resume" in err
    for name, content in earlier.items():
        assert (tmp_path / name).read_bytes() == content
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def _slow_config(folder):
    """A configuration that trains for many epochs without early stopping."""
    path = folder / "slow.json"
    path.write_text(json.dumps({"width": 16, "depth": 1, "epochs": 200, "patience": 200, "batch_size": 256}))
    return path


def test_batch_norm_folded_into_dense_for_export(simulated_training):
    """The exported network has no BatchNormalization or Dropout left and predicts what the trained one does."""
    from lhcbpid.backend import keras
    from lhcbpid.export import inference_model
    from lhcbpid.features import fit_statistics
    from lhcbpid.model import ModelConfig, build_model

    X = read_dataset(simulated_training).X[:2000]
    model = build_model(ModelConfig(width=16, depth=2), fit_statistics(X))
    rng = np.random.default_rng(0)
    for layer in model.layers:  # trained-looking statistics instead of the identity a new layer holds
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 2, shape), rng.normal(0, 0.5, shape), rng.normal(0, 1, shape),
                               rng.uniform(0.2, 3, shape)])
    folded = inference_model(model)
    kinds = {type(layer) for layer in folded.layers}
    assert keras.layers.BatchNormalization not in kinds and keras.layers.Dropout not in kinds
    assert folded.layers[-1].name == "probabilities"
    np.testing.assert_allclose(folded.predict(X, verbose=0), model.predict(X, verbose=0), atol=2e-6)
