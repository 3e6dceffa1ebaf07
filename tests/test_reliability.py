"""Bad input through every command: one table of cases, each answered by exit 2 and one line, or by a correct result.

Every file is generated here from simulated data (no committed binaries). `CASES` maps a case to what each
command must do with it; a command missing from a row does not take that kind of input. For every error the
test checks: exit code 2, exactly one `lhcbpid CMD: error:` line naming the problem, no traceback, and
nothing written (no output file, no *.tmp). `python tests/test_reliability.py` prints the counts per command.

Downloads (interrupted transfer, wrong size, changed sha256, read-only cache, full disk) are at the end,
against a local http.server on 127.0.0.1; each must leave no corrupt file and recover on a retry.
"""

from __future__ import annotations

import errno
import gzip
import http.server
import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lhcbpid import data
from lhcbpid.cli import main
from lhcbpid.schema import CLASSES, FEATURES, TRAINING_COLUMNS

ROWS = 120  # 20 per class: enough for a stratified 70/15/15 split of every class
TINY_CONFIG = {"width": 16, "depth": 1, "epochs": 1}


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Error:
    """Exit 2 with one line containing `text`."""

    text: str


WORKS = "works"


def _all(outcome, commands=("train", "predict", "evaluate")) -> dict:
    return {c: outcome for c in commands}


#: case -> {command: Error(text in the one line) or WORKS}. CSV cases are labelled training-format files.
CASES: dict[str, dict[str, object]] = {
    # data files (train, predict, evaluate)
    "truncated_gzip": _all(Error("truncated or corrupt")),
    "missing_column": _all(Error("missing column EcalE")),
    "duplicated_column": _all(Error("column TrackP appears more than once")),
    "text_value": _all(Error("column EcalE, row 3 (line 4): 'abc' is not a number")),
    "nan_value": _all(Error("column EcalE, row 3 is nan")),
    "inf_value": _all(Error("column EcalE, row 3 is inf")),
    "empty_value": _all(Error("column EcalE, row 3 is empty")),
    "short_row": _all(Error("has 2 fields, the header has 50")),
    "no_rows_empty_file": _all(Error("is empty (no header line)")),
    "header_only": _all(Error("has a header but no data rows")),
    "one_row": {"train": Error("cannot split 1 rows"), "predict": WORKS,
                "evaluate": Error("1 row but none of class")},
    "one_class_missing": {"train": Error("none has class Ghost"), "predict": WORKS,
                          "evaluate": Error("none of class Ghost")},
    "too_few_of_a_class": {"train": Error("class Muon has 3 rows, so the validation part would have none of it"),
                           "predict": WORKS, "evaluate": WORKS},
    "semicolon_delimiter": _all(Error("split by ';', not commas")),
    "utf8_bom": _all(WORKS),
    "windows_line_endings": _all(WORKS),
    "shuffled_columns": _all(WORKS),
    "extra_columns": _all(WORKS),
    "unknown_label": {"train": Error("unknown Label 'Positron'"), "predict": WORKS,
                      "evaluate": Error("unknown Label 'Positron'")},
    "lowercase_labels": {"train": Error("labels are case-sensitive: write 'Muon'"), "predict": WORKS,
                         "evaluate": Error("labels are case-sensitive: write 'Muon'")},
    "data_is_directory": _all(Error("is a directory")),
    # outputs that cannot be written
    "read_only_output_dir": {"train": Error("cannot write"), "predict": Error("cannot write"),
                             "evaluate": Error("cannot write")},
    "output_disk_full": {"predict": Error("No space left on device"),
                         "evaluate": Error("No space left on device")},
    # model files (predict, evaluate, info)
    "onnx_truncated": _all(Error("is not a valid ONNX model"), ("predict", "evaluate", "info")),
    "onnx_not_onnx": _all(Error("is not a valid ONNX model"), ("predict", "evaluate", "info")),
    "onnx_empty_file": _all(Error("is not a valid ONNX model"), ("predict", "evaluate", "info")),
    "onnx_two_inputs": _all(Error("the model takes 2 inputs"), ("predict", "evaluate", "info")),
    "onnx_48_wide": _all(Error("has 48 columns but feature_names lists 49"), ("predict", "evaluate", "info")),
    "onnx_missing": _all(Error("no such model file"), ("predict", "evaluate", "info")),
    # simulate's arguments
    "rows_zero": {"simulate": Error("rows must be a positive integer, got 0")},
    "rows_negative": {"simulate": Error("rows must be a positive integer, got -5")},
    "rows_one": {"simulate": WORKS},
    "out_in_missing_dir": {"simulate": Error("does not exist")},
    "out_in_read_only_dir": {"simulate": Error("check the path, its permissions")},
    "out_unknown_suffix": {"simulate": Error("cannot tell the format")},
    "out_is_directory": {"simulate": Error("cannot tell the format")},
    # downloads (see the end of this file)
    "download_interrupted": {"fetch": Error("broke off mid-transfer")},
    "download_wrong_size": {"fetch": Error("expected")},
    "download_changed_sha256": {"fetch": Error("recorded at first download")},
    "download_read_only_cache": {"fetch": Error("cannot write")},
    "download_disk_full": {"fetch": Error("No space left on device")},
    "unknown_dataset": {"fetch": Error("unknown dataset 'validation'")},
}

COMMANDS = ("fetch", "simulate", "train", "predict", "evaluate", "info")


def case_counts() -> dict[str, dict[str, int]]:
    """Per command: how many cases end in exit 2 with one line, and how many must just work."""
    counts = {c: {"exit 2, one line": 0, "works": 0} for c in COMMANDS}
    for expectations in CASES.values():
        for command, outcome in expectations.items():
            counts[command]["works" if outcome == WORKS else "exit 2, one line"] += 1
    return counts


def _params(commands) -> list:
    return [pytest.param(case, command, id=f"{command}-{case}")
            for case, expectations in CASES.items() for command in expectations if command in commands]


def test_every_command_has_cases():
    counts = case_counts()
    assert all(sum(c.values()) >= 5 for c in counts.values()), counts


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LHCBPID_DATA", str(tmp_path / "data-dir"))


def _run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def _assert_one_line_error(code: int, err: str, command: str, text: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith(f"lhcbpid {command}: error:")]
    assert code == 2, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    assert text in lines[0], lines[0]
    assert "Traceback" not in err


def _written(directory: Path) -> list[str]:
    """Everything in a directory tree (output files, temporary files), as relative names."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture
def read_only(tmp_path):
    """Make directories really read-only, also for root (chattr +i), and writable again afterwards."""
    made: list[Path] = []

    def make(directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(directory)],
                                                               capture_output=True).returncode != 0:
                pytest.skip("running as root and cannot make a directory immutable")
        else:
            directory.chmod(0o555)
        made.append(directory)
        probe = directory / "probe"
        with pytest.raises(OSError):
            probe.write_text("x")
        return directory

    yield make
    for directory in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        else:
            directory.chmod(0o755)


# --------------------------------------------------------------------------- generated inputs


@pytest.fixture(scope="module")
def base_csv(tmp_path_factory) -> Path:
    """A labelled simulated training file as plain CSV, 120 rows, every class 20 times."""
    from lhcbpid.simulate import write_simulated

    path = tmp_path_factory.mktemp("reliability") / "base.csv"
    write_simulated(path, rows=ROWS, seed=21, kind="training")
    return path


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = [[field.strip('"') for field in line.split(",")] for line in text.splitlines()]  # no commas inside
    return lines[0], lines[1:]


def _text(header: list[str], rows: list[list[str]], newline: str = "\n") -> str:
    return newline.join(",".join(r) for r in [header, *rows]) + newline


def _set(header, rows, column: str, row: int, value: str):
    rows = [list(r) for r in rows]
    rows[row][header.index(column)] = value
    return header, rows


def _relabel(header, rows, old: str, new: str):
    j = header.index("Label")
    return header, [[new if k == j and v == old else v for k, v in enumerate(r)] for r in rows]


def _drop_class(header, rows, name: str, keep: int):
    j = header.index("Label")
    seen, out = 0, []
    for r in rows:
        if r[j] == name:
            seen += 1
            if seen > keep:
                continue
        out.append(r)
    return header, out


def make_data(case: str, base: Path, directory: Path) -> Path:
    """The input file for a data case (the base file for cases about models or outputs)."""
    header, rows = _table(base.read_text())
    path = directory / f"{case}.csv"
    edited = {
        "missing_column": lambda: ([h for h in header if h != "EcalE"],
                                   [[v for h, v in zip(header, r) if h != "EcalE"] for r in rows]),
        "duplicated_column": lambda: (header + ["TrackP"], [r + ["1.0"] for r in rows]),
        "text_value": lambda: _set(header, rows, "EcalE", 2, "abc"),
        "nan_value": lambda: _set(header, rows, "EcalE", 2, "nan"),
        "inf_value": lambda: _set(header, rows, "EcalE", 2, "inf"),
        "empty_value": lambda: _set(header, rows, "EcalE", 2, ""),
        "short_row": lambda: (header, rows[:5] + [["1.0", "2.0"]] + rows[5:]),
        "header_only": lambda: (header, []),
        "one_row": lambda: (header, rows[:1]),
        "one_class_missing": lambda: _drop_class(header, rows, "Ghost", 0),
        "too_few_of_a_class": lambda: _drop_class(header, rows, "Muon", 3),
        "unknown_label": lambda: _relabel(header, rows, rows[4][header.index("Label")], "Positron"),
        "lowercase_labels": lambda: (header, [[v.lower() if v in CLASSES else v for v in r] for r in rows]),
        "extra_columns": lambda: (["Comment", *header, "RunNumber"], [["x", *r, "7"] for r in rows]),
    }
    if case in edited:
        path.write_text(_text(*edited[case]()))
    elif case == "truncated_gzip":
        path = directory / f"{case}.csv.gz"
        whole = gzip.compress(base.read_bytes())
        path.write_bytes(whole[: len(whole) // 2])
    elif case == "no_rows_empty_file":
        path.write_bytes(b"")
    elif case == "semicolon_delimiter":
        path.write_text(base.read_text().replace(",", ";"))
    elif case == "utf8_bom":
        path.write_bytes(b"\xef\xbb\xbf" + base.read_bytes())
    elif case == "windows_line_endings":
        path.write_bytes(base.read_text().replace("\n", "\r\n").encode())
    elif case == "shuffled_columns":
        order = np.random.default_rng(3).permutation(len(header))
        path.write_text(_text([header[i] for i in order], [[r[i] for i in order] for r in rows]))
    elif case == "data_is_directory":
        path = directory / "a-directory.csv"
        path.mkdir()
    else:
        return base
    return path


def _onnx_bytes(inputs: int = 1, width: int = len(FEATURES)) -> bytes:
    """A softmax model with the lhcbpid metadata: `inputs` float inputs [N, width] (summed), output [N, 6]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    names = [f"input{i}" if i else "input" for i in range(inputs)]
    nodes = [helper.make_node("Sum", names, ["x"]) if inputs > 1 else helper.make_node("Identity", names, ["x"]),
             helper.make_node("MatMul", ["x", "W"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(
        nodes, "pid", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", width]) for n in names],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(CLASSES)])],
        [numpy_helper.from_array(rng.normal(0, 0.01, (width, len(CLASSES))).astype(np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"feature_names": json.dumps(list(FEATURES)),
                                   "class_names": json.dumps(list(CLASSES))})
    return model.SerializeToString()


def make_model(case: str, good: Path, directory: Path) -> Path:
    """The model file for a model case (the trained model for every other case)."""
    path = directory / f"{case}.onnx"
    if case == "onnx_truncated":
        whole = good.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif case == "onnx_not_onnx":
        path.write_text("ID,Electron,Ghost\n1,0.5,0.5\n")
    elif case == "onnx_empty_file":
        path.write_bytes(b"")
    elif case == "onnx_two_inputs":
        path.write_bytes(_onnx_bytes(inputs=2))
    elif case == "onnx_48_wide":
        path.write_bytes(_onnx_bytes(width=48))
    elif case == "onnx_missing":
        pass
    else:
        return good
    return path


# --------------------------------------------------------------------------- train, predict, evaluate, info


def _reference_probabilities(model: Path, base: Path) -> np.ndarray:
    from lhcbpid.data import read_dataset
    from lhcbpid.predict import load_model, predict_proba

    session, _ = load_model(model)
    return predict_proba(session, read_dataset(base).X)


def _check_works(command: str, case: str, out: Path, model: Path, base: Path, source: Path) -> None:
    """The command's outputs are complete and right."""
    if command == "predict":
        table = pa.csv.read_csv(out)
        P = np.column_stack([table.column(c).to_numpy() for c in CLASSES])
        n = 1 if case == "one_row" else sum(1 for _ in open(source, encoding="utf-8-sig")) - 1
        assert P.shape == (n, len(CLASSES))
        np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
        if case in ("utf8_bom", "windows_line_endings", "shuffled_columns", "extra_columns", "one_row"):
            np.testing.assert_allclose(P, _reference_probabilities(model, base)[:n], atol=1e-6)
    elif command in ("train", "evaluate"):
        aucs = json.loads((out / "particles.json").read_text())["test_auc"]
        assert list(aucs) == list(CLASSES) and all(0.0 <= a <= 1.0 for a in aucs.values()), aucs
        expected = {"particles.json", "metrics.json", "roc.png", "confusion.png"}
        expected |= {"particles.onnx", "train.png"} if command == "train" else {"efficiency.png"}
        assert set(_written(out)) == expected
        if command == "evaluate" and case != "too_few_of_a_class":
            reference = json.loads((out / "metrics.json").read_text())["test"]["log_loss"]
            assert np.isfinite(reference)
    assert not [name for name in _written(out.parent if command == "predict" else out) if name.endswith(".tmp")]


def _disk_full(monkeypatch, command: str) -> None:
    """Writing the output hits a full disk (a real ENOSPC from /dev/full for predict's stream)."""
    if command == "predict":
        import lhcbpid.predict

        real = pa.OSFile
        monkeypatch.setattr(lhcbpid.predict.pa, "OSFile", lambda path, mode="r": real("/dev/full", mode))
        if not Path("/dev/full").exists():
            pytest.skip("no /dev/full")
    else:
        def full(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(Path, "write_bytes", full)


@pytest.mark.parametrize(("case", "command"), _params(("train", "predict", "evaluate", "info")))
def test_bad_input(case, command, base_csv, trained, tmp_path, capsys, monkeypatch, read_only):
    outcome = CASES[case][command]
    source = make_data(case, base_csv, tmp_path)
    model = make_model(case, trained / "particles.onnx", tmp_path)
    out_dir = tmp_path / "out"
    if case == "read_only_output_dir":
        read_only(out_dir)
    if case == "output_disk_full":
        out_dir.mkdir()
        _disk_full(monkeypatch, command)
    out = out_dir / "predict.csv" if command == "predict" else out_dir
    argv = {
        "train": ["train", "--data", str(source), "--out", str(out), "--epochs", "1",
                  "--config", str(_tiny_config(tmp_path))],
        "predict": ["predict", "--model", str(model), "--data", str(source), "--out", str(out)],
        "evaluate": ["evaluate", "--model", str(model), "--data", str(source), "--out", str(out)],
        "info": ["info", "--model", str(model)],
    }[command]
    code, err = _run(argv, capsys)
    if outcome == WORKS:
        assert code == 0, err[-3000:]
        assert "Traceback" not in err and "error:" not in err
        _check_works(command, case, out, model, base_csv, source)
    else:
        _assert_one_line_error(code, err, command, outcome.text)
        assert _written(out_dir) == [], "nothing may be written for bad input"


def _tiny_config(directory: Path) -> Path:
    path = directory / "tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


def test_info_on_the_trained_model_still_works(trained, capsys):
    """The control for the info cases: the real model is described, with 49 features and 6 classes."""
    code, _ = _run(["info", "--model", str(trained / "particles.onnx")], capsys)
    assert code == 0


# --------------------------------------------------------------------------- simulate


@pytest.mark.parametrize(("case", "command"), _params(("simulate",)))
def test_simulate_bad_arguments(case, command, tmp_path, capsys, read_only):
    outcome = CASES[case][command]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rows = {"rows_zero": "0", "rows_negative": "-5", "rows_one": "1"}.get(case, "50")
    out = {"out_in_missing_dir": out_dir / "missing" / "t.csv", "out_unknown_suffix": out_dir / "t.txt",
           "out_is_directory": out_dir}.get(case, out_dir / "t.csv.gz")
    if case == "out_in_read_only_dir":
        read_only(out_dir)
    code, err = _run(["simulate", "--rows", rows, "--seed", "1", "--out", str(out)], capsys)
    if outcome == WORKS:
        assert code == 0, err
        from lhcbpid.data import read_dataset

        d = read_dataset(out, labelled=True)
        assert d.X.shape == (1, len(FEATURES)) and len(d.y) == 1
    else:
        _assert_one_line_error(code, err, command, outcome.text)
        assert _written(out_dir) == []


# --------------------------------------------------------------------------- downloads


PAYLOAD = gzip.compress(b",".join(c.encode() for c in TRAINING_COLUMNS) + b"\n" * 2000, mtime=0)


class _Server:
    """http.server on 127.0.0.1; `mode` chooses how the next answers go wrong."""

    def __init__(self) -> None:
        self.body = PAYLOAD
        self.mode = "ok"
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                body = server.body
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode == "interrupt":
                    self.wfile.write(body[: len(body) // 3])  # then close: the client is promised more
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/training.csv.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    s = _Server()
    monkeypatch.setattr(data, "URLS", {"training": (s.url,), "test": (s.url,)})
    monkeypatch.setattr(data, "SIZES", {"training": len(PAYLOAD), "test": len(PAYLOAD)})
    yield s
    s.close()


def _full_disk(monkeypatch) -> None:
    """Every write of a downloaded chunk fails with ENOSPC."""
    import pooch

    real = pooch.HTTPDownloader.__call__

    class Full:
        def __init__(self, path):
            self.file = open(path, "w+b")

        def write(self, chunk):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

        def close(self):
            self.file.close()

    def call(self, url, output_file, pooch_, check_only=False):
        target = Full(output_file)
        try:
            return real(self, url, target, pooch_, check_only)
        finally:
            target.close()

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", call)


@pytest.mark.parametrize(("case", "command"), _params(("fetch",)))
def test_download_failures(case, command, server, tmp_path, capsys, monkeypatch, read_only):
    outcome = CASES[case][command]
    cache = tmp_path / "cache"
    name = "validation" if case == "unknown_dataset" else "training"
    target = cache / "training.csv.gz"
    if case == "download_interrupted":
        server.mode = "interrupt"
    elif case == "download_wrong_size":
        server.body = PAYLOAD + b"extra"
    elif case == "download_changed_sha256":
        assert main(["fetch", "--data-dir", str(cache), "training"]) == 0  # recorded at first download
        target.unlink()
        server.body = PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1])  # same size, other bytes
    elif case == "download_read_only_cache":
        read_only(cache)
    elif case == "download_disk_full":
        _full_disk(monkeypatch)
    before = _written(cache)
    code, err = _run(["fetch", "--data-dir", str(cache), name], capsys)
    _assert_one_line_error(code, err, command, outcome.text)
    assert _written(cache) == before, "no corrupt or partial file may be kept"
    if case == "unknown_dataset":
        return

    # the cause goes away: a retry recovers and keeps exactly the good file
    server.mode, server.body = "ok", PAYLOAD
    monkeypatch.undo()
    monkeypatch.setattr(data, "URLS", {"training": (server.url,), "test": (server.url,)})
    monkeypatch.setattr(data, "SIZES", {"training": len(PAYLOAD), "test": len(PAYLOAD)})
    monkeypatch.setenv("LHCBPID_DATA", str(tmp_path / "data-dir"))
    if case == "download_read_only_cache":
        subprocess.run(["chattr", "-i", str(cache)], check=False) if os.geteuid() == 0 else cache.chmod(0o755)
    code, err = _run(["fetch", "--data-dir", str(cache), "training"], capsys)
    assert code == 0, err
    assert target.read_bytes() == PAYLOAD
    assert data.file_sha256(target) == json.loads((cache / "training.csv.gz.sha256.json").read_text())["sha256"]
    assert not [n for n in _written(cache) if n.endswith(".tmp")]


if __name__ == "__main__":
    print(f"{'command':10} {'exit 2, one line':>17} {'works':>6}")
    for command, counts in case_counts().items():
        print(f"{command:10} {counts['exit 2, one line']:>17} {counts['works']:>6}")
