"""`lhcbpid evaluate` and the homework's predict.py, with the ONNX model alone."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.csv as pacsv
import pytest

from lhcbpid.cli import main
from lhcbpid.data import read_dataset, read_labels
from lhcbpid.evaluate import class_aucs
from lhcbpid.schema import CLASSES, ID

ROOT = Path(__file__).resolve().parents[1]


def test_evaluate_on_a_test_file_with_its_labels_file(trained, simulated_test, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(trained / "particles.onnx"), "--data", str(simulated_test),
                 "--out", str(out)]) == 0
    for name in ("particles.json", "metrics.json", "roc.png", "confusion.png", "efficiency.png"):
        assert (out / name).stat().st_size > 0
    data = read_dataset(simulated_test)
    y = read_labels(Path(f"{simulated_test}.labels.csv"), data.ids)
    P = ort.InferenceSession(str(trained / "particles.onnx")).run(None, {"input": data.X})[0]
    reported = json.loads((out / "particles.json").read_text())
    assert list(reported) == ["test_auc"] and list(reported["test_auc"]) == list(CLASSES)
    assert reported["test_auc"] == pytest.approx(class_aucs(y, P), abs=1e-12)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "SIMULATED" in metrics["source"] and metrics["test"]["rows"] == len(y)


def test_evaluate_on_a_labelled_training_file(trained, simulated_training, tmp_path):
    assert main(["evaluate", "--model", str(trained / "particles.onnx"), "--data", str(simulated_training),
                 "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["rows"] == 6000


def test_evaluate_without_labels_is_one_line_and_exit_2(trained, simulated_test, tmp_path, capsys):
    unlabelled = tmp_path / "test.csv.gz"
    shutil.copy(simulated_test, unlabelled)
    assert main(["evaluate", "--model", str(trained / "particles.onnx"), "--data", str(unlabelled),
                 "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert "--labels" in err and str(unlabelled) in err and err.count("\n") == 1
    assert not (tmp_path / "eval").exists()


def test_homework_predict_script(trained, simulated_test, tmp_path):
    """python predict.py runs particles.onnx on test.csv.gz and writes predict.csv: ID and six probabilities."""
    shutil.copy(trained / "particles.onnx", tmp_path / "particles.onnx")
    shutil.copy(simulated_test, tmp_path / "test.csv.gz")
    done = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--data", "test.csv.gz"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = pacsv.read_csv(tmp_path / "predict.csv")
    assert table.column_names == [ID, *CLASSES]
    P = np.column_stack([table[c].to_numpy() for c in CLASSES])
    assert len(P) == 3000 and np.allclose(P.sum(axis=1), 1.0, atol=1e-4)
