"""Time reading and predicting on simulated-like test files of 1.2M and 4.8M rows; print a small table.

    .venv/bin/python benchmarks/predict_speed.py [--model particles.onnx] [--rows 1200000 4800000] [--workdir DIR]

Without a model file a 49-256-256-6 MLP with random weights is built, so the script runs standalone.
Each timed step runs in a fresh subprocess that reports its own wall time, CPU time and peak RSS (ru_maxrss);
steps run in --repeat rounds (default 5) and each step's fastest run is reported, since other tenants of a
shared machine only ever slow a run down.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from lhcbpid.schema import CLASSES, FEATURES, ID, LABEL, TRAINING_COLUMNS

_FLAG_PREFIXES = ("Flag", "RICHpFlag", "MuonFlag", "MuonLooseFlag")


# --------------------------------------------------------------------------- data and model


def _feature_values(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """Random values of realistic magnitude for one feature, rounded to 6 decimals like the real file."""
    if name.startswith(_FLAG_PREFIXES):
        return (rng.random(n) < 0.8).astype(np.float64)
    if name.startswith("TrackNDoF"):
        return rng.integers(1, 40, n).astype(np.float64)
    if name == "SpdE":
        return rng.choice([-999.0, 0.0, 3.2], n, p=[0.15, 0.25, 0.6])
    if name in ("TrackP", "TrackPt", "EcalE", "HcalE"):
        values = rng.lognormal(8.5 if name != "TrackPt" else 6.5, 1.0, n)
    elif name == "GhostProbability":
        values = rng.beta(0.6, 12, n)
    else:
        values = rng.normal(0.0, 10.0, n)
    values = np.round(values, 6)
    values[rng.random(n) < 0.1] = -999.0
    return values


def make_csv(path: Path, rows: int, kind: str = "test", seed: int = 0, chunk: int = 200_000) -> Path:
    """Write a simulated-like training (with Label) or test (ID last) csv.gz in the real column order."""
    columns = TRAINING_COLUMNS if kind == "training" else FEATURES + (ID,)
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".part")
    with gzip.open(tmp, "wb", compresslevel=1) as sink:
        sink.write((",".join(columns) + "\n").encode())
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            arrays = {}
            for name in columns:
                if name == LABEL:
                    arrays[name] = pa.array(np.array(CLASSES)[rng.integers(0, len(CLASSES), n)])
                elif name == ID:
                    arrays[name] = pa.array(np.arange(start, start + n, dtype=np.int64))
                else:
                    arrays[name] = pa.array(_feature_values(name, rng, n))
            pacsv.write_csv(pa.table(arrays), sink, write_options=options)
    tmp.replace(path)
    return path


def make_mlp(path: Path, hidden: tuple[int, ...] = (256, 256), seed: int = 0) -> Path:
    """A 49-256-256-6 ReLU MLP with softmax output, random weights, and the lhcbpid metadata contract."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    sizes = (len(FEATURES), *hidden, len(CLASSES))
    nodes, inits, current = [], [], "input"
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [numpy_helper.from_array(rng.normal(0, n_in**-0.5, (n_in, n_out)).astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [current, f"W{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        current = f"a{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"]))
            current = f"r{i}"
    nodes.append(helper.make_node("Softmax", [current], ["probabilities"], axis=1))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 49])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"feature_names": json.dumps(list(FEATURES)),
                                   "class_names": json.dumps(list(CLASSES))})
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------- timed steps (run in children)


def _step_read_csv(data: Path, model: Path, batch_rows: int, total: int) -> int:
    """The fastest whole-file parse: pyarrow.csv.read_csv, all columns, multi-threaded, no checks."""
    return pacsv.read_csv(data).num_rows


def _step_iter_batches(data: Path, model: Path, batch_rows: int, total: int) -> int:
    """lhcbpid's streaming reader with all checks, as predict uses it."""
    from lhcbpid.data import iter_batches

    return sum(len(X) for _, X in iter_batches(data, FEATURES, batch_rows))


def _step_predict(data: Path, model: Path, batch_rows: int, total: int) -> int:
    """End to end: read, check, infer, write predict.csv."""
    from lhcbpid.predict import predict_file

    out = data.with_name("predict-bench.csv")
    predict_file(model, data, out, batch_rows=batch_rows)
    rows = sum(1 for _ in open(out, "rb")) - 1
    out.unlink()
    return rows


def _step_inference(data: Path, model: Path, batch_rows: int, total: int) -> int:
    """Inference alone: predict_proba on in-memory batches of random rows, as many rows as the file has.

    Loading the model and one warm-up batch happen before the clock starts (see _child)."""
    from lhcbpid.predict import load_model, predict_proba

    session, _ = load_model(model)
    X = np.random.default_rng(0).normal(0, 10, (min(batch_rows, total), len(FEATURES))).astype(np.float32)
    predict_proba(session, X)
    _child.started = time.perf_counter()
    done = 0
    while done < total:
        done += len(predict_proba(session, X[: total - done]))
    return done


STEPS = {"read_csv": _step_read_csv, "iter_batches": _step_iter_batches, "predict": _step_predict,
         "inference": _step_inference}


def _child(step: str, data: Path, model: Path, batch_rows: int, total: int) -> None:
    """Run one step and print {rows, seconds, cpu_seconds, peak_mb} as JSON (a step may restart the clock)."""
    _child.started = time.perf_counter()
    rows = STEPS[step](data, model, batch_rows, total)
    seconds = time.perf_counter() - _child.started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                      "peak_mb": usage.ru_maxrss / 1024}))


def _run_step(step: str, data: Path, model: Path, batch_rows: int, total: int) -> dict:
    """Run a step in a fresh interpreter and return its JSON report."""
    cmd = [sys.executable, __file__, "--child", step, "--data", str(data), "--model", str(model),
           "--batch-rows", str(batch_rows), "--rows", str(total)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    """Build inputs if needed, run every step for every size, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("particles.onnx"))
    parser.add_argument("--rows", type=int, nargs="+", default=[1_200_000, 4_800_000])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lhcbpid-bench")
    parser.add_argument("--batch-rows", type=int, default=25_000)
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--repeat", type=int, default=5, help="runs per step; the fastest is reported")
    parser.add_argument("--child", choices=list(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.data, args.model, args.batch_rows, args.rows[0])
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.model
    if not model.is_file():
        model = make_mlp(args.workdir / "mlp-49-256-256-6.onnx")
        print(f"no {args.model}: using a random 49-256-256-6 MLP ({model})", file=sys.stderr)
    print("| rows | csv.gz MB | step | seconds | CPU s | rows/s | peak RSS MB |\n|---:|---:|---|---:|---:|---:|---:|")
    for rows in args.rows:
        data = args.workdir / f"test_{rows}.csv.gz"
        if not data.is_file():
            print(f"writing {data} ...", file=sys.stderr)
            make_csv(data, rows)
        size_mb = data.stat().st_size / 1e6
        runs: dict[str, list[dict]] = {step: [] for step in args.steps}
        for _ in range(args.repeat):  # rounds over every step, so a slow spell of the machine hits them alike
            for step in args.steps:
                runs[step].append(_run_step(step, data, model, args.batch_rows, rows))
        for step in args.steps:
            r = {**min(runs[step], key=lambda run: run["seconds"]), "peak_mb": max(run["peak_mb"] for run in runs[step])}
            print(f"| {rows:,} | {size_mb:,.0f} | {step} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
                  f"{r['rows'] / r['seconds']:,.0f} | {r['peak_mb']:,.0f} |", flush=True)
        readers = [min(run["seconds"] for run in runs[step]) for step in ("read_csv", "iter_batches") if step in runs]
        if "predict" in runs and readers:
            predict = min(run["seconds"] for run in runs["predict"])
            print(f"\n{rows:,} rows: predict end to end takes {predict / min(readers):.2f}x the fastest reader "
                  f"(target 1.5x)\n", flush=True)


if __name__ == "__main__":
    main()
