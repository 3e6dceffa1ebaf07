"""`lhcbpid benchmark --quick` on a few thousand simulated rows: the report and JSON a user reads, written atomically."""

import io
import json
import sys

import pytest

from lhcbpid import benchmark
from lhcbpid.cli import main
from lhcbpid.data import file_sha256
from lhcbpid.schema import CLASSES

SEED = 3
MODELS = ("ours", "LightGBM", "XGBoost", "course baseline GBC", "course MLP 100-50", "homework start")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, simulated_training):
    """Output directory, stdout and stderr of one quick benchmark run."""
    out = tmp_path_factory.mktemp("benchmark")
    capture = pytest.MonkeyPatch()
    stdout, stderr = io.StringIO(), io.StringIO()
    capture.setattr(sys, "stdout", stdout)
    capture.setattr(sys, "stderr", stderr)
    try:
        code = main(["benchmark", "--data", str(simulated_training), "--out", str(out), "--quick", "--seed", str(SEED)])
    finally:
        capture.undo()
    assert code == 0, stderr.getvalue()[-2000:]
    return out, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def report(quick_run):
    return json.loads((quick_run[0] / "benchmark.json").read_text())


def test_writes_report_json_and_roc_overlays_atomically(quick_run, report):
    out = quick_run[0]
    hardest = report["hardest_class"]
    expected = {"benchmark.md", "benchmark.json", "roc_electron.png", f"roc_{hardest.lower()}.png"}
    assert {p.name for p in out.iterdir()} == expected  # nothing else, no temporary files left behind
    for name in expected - {"benchmark.md", "benchmark.json"}:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert hardest == min(CLASSES, key=lambda c: max(m["test_auc"][c] for m in report["models"].values()))


def test_json_has_every_number_for_every_model(report):
    assert list(report["models"]) == list(MODELS)
    sizes = report["split"]["sizes"]
    for name, m in report["models"].items():
        assert list(m["test_auc"]) == list(CLASSES), name
        assert all(0.0 <= v <= 1.0 for v in m["test_auc"].values()), name
        assert m["log_loss"] > 0 and 0.0 <= m["accuracy"] <= 1.0, name
        assert m["train_seconds"] > 0 and m["rows_per_second"] > 0 and m["size_bytes"] > 0, name
        assert m["test_rows"] == sizes["test"], name
        assert 0 < m["train_rows"] <= sizes["train"], name
    models = report["models"]
    assert models["course baseline GBC"]["train_rows"] == min(benchmark.COURSE_GBC_ROWS, sizes["train"])
    assert models["homework start"]["train_rows"] == min(benchmark.HOMEWORK_ROWS, sizes["train"])
    assert models["ours"]["size_format"] == "ONNX"
    assert models["ours"]["validation_rows"] == sizes["validation"]
    assert len(models["LightGBM"]["details"]["trials"]) == benchmark.QUICK_SEARCH_TRIALS
    assert models["ours"]["details"]["epochs_run"] <= benchmark.QUICK.our_epochs


def test_json_records_data_split_seed_and_machine(report, simulated_training):
    assert report["complete"] is True and report["quick"] is True and report["seed"] == SEED
    data = report["data"]
    assert data["sha256"] == file_sha256(simulated_training)
    assert "SIMULATED" in data["source"]
    assert data["rows_used"] == min(benchmark.QUICK_ROWS, data["rows_in_file"])
    assert sum(report["split"]["sizes"].values()) == data["rows_used"]
    assert report["split"]["seed"] == SEED and len(report["split"]["digest"]) == 16
    assert report["machine"]["cores"] >= 1 and report["machine"]["packages"]["lightgbm"]
    assert "CatBoost" in report["skipped"]


def test_markdown_states_what_a_reader_needs(quick_run, report):
    md = (quick_run[0] / "benchmark.md").read_text()
    assert "QUICK RUN" in md and "SIMULATED" in md
    assert report["data"]["sha256"] in md and report["split"]["digest"] in md
    assert f"Seed: {SEED}" in md and "cores" in md and "Python" in md
    assert "CatBoost" in md and "skipped" in md.lower()
    for name, m in report["models"].items():
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        for c in CLASSES:
            assert f"{m['test_auc'][c]:.4f}" in row, (name, c)
        assert f"{m['log_loss']:.4f}" in row and f"{m['train_rows']:,}" in row
    # the published real-data numbers sit next to the rerun peers
    assert "0.9839" in md and "0.9898" in md
    assert "Where ours is behind the best peer" in md
    assert "SIMULATOR FIDELITY PROBLEM" not in md  # a quick run's numbers say nothing about the simulator


def test_stdout_ends_with_the_results_table(quick_run, report):
    stdout = quick_run[1]
    assert stdout.strip().splitlines()[0].startswith("| model | Electron |")
    assert stdout.strip() == benchmark.results_table(report["models"]).strip()


def test_progress_names_each_model_on_stderr(quick_run):
    stderr = quick_run[2]
    for name in MODELS:
        assert f"benchmark: {name}: trained in" in stderr


def test_fidelity_flags_differences_beyond_tolerance():
    real = benchmark.REAL_RESULTS["course baseline GBC"]
    aucs = dict(real["auc"])
    aucs["Kaon"] += 0.02
    aucs["Pion"] -= 0.01
    rows = benchmark.fidelity({"course baseline GBC": {"test_auc": aucs, "log_loss": 0.7}}, "SIMULATED")
    flagged = {r["metric"] for r in rows if r["flagged"]}
    assert flagged == {"AUC Kaon"}


def test_gaps_say_where_ours_is_behind_and_by_how_much():
    base = {c: 0.9 for c in CLASSES}
    results = {"ours": {"test_auc": base, "log_loss": 0.50},
               "peer": {"test_auc": {**base, "Kaon": 0.93}, "log_loss": 0.45}}
    found = {g["metric"]: g for g in benchmark.gaps(results)}
    assert set(found) == {"AUC Kaon", "log loss"}
    assert found["AUC Kaon"]["behind_by"] == pytest.approx(0.03)
    assert found["log loss"]["behind_by"] == pytest.approx(0.05) and found["log loss"]["best_peer"] == "peer"


def test_unlabelled_file_is_a_one_line_error(tmp_path, simulated_test, capsys):
    assert main(["benchmark", "--data", str(simulated_test), "--out", str(tmp_path / "out"), "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line]
    assert errors == err[-1:] and err[-1].startswith("lhcbpid benchmark: error:") and "Label" in err[-1]
    assert not (tmp_path / "out").exists()
