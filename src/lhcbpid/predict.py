"""Run an exported ONNX model on a file in chunks, write probabilities or a course submission, describe a model.

Needs only onnxruntime, numpy and pyarrow (never TensorFlow), so predicting stays light.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from isal import igzip_threaded
from tqdm import tqdm

from lhcbpid.atomic import atomic_path
from lhcbpid.data import iter_batches, resolve_data
from lhcbpid.errors import InputError
from lhcbpid.schema import CLASSES, FEATURES, ID

#: Column order of the course's submission file (after ID).
SUBMISSION_CLASSES: tuple[str, ...] = ("Ghost", "Electron", "Muon", "Pion", "Kaon", "Proton")
SUBMISSION_DECIMALS = 5
#: ISA-L gzip level for .gz output (0-3): on probabilities, 3 gives files 12% larger than zlib's default in 1/20 the time.
_GZIP_LEVEL = 3
OUTPUT_NAME = "probabilities"
#: Most rows per onnxruntime call: small enough for the activations to stay in cache, large enough to amortise a call.
INFERENCE_ROWS = 8_192
#: Fewest rows per onnxruntime call when a batch is split across threads (below that, per-call cost dominates).
MIN_SLICE_ROWS = 2_048
#: Concurrent onnxruntime calls, each single-threaded: faster than one call spread over every core, because
#: most nodes of a small network are too small for onnxruntime to split across threads.
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

_ONNX_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
               "tensor(int32)": "int32", "tensor(string)": "string", "tensor(bool)": "bool"}


# --------------------------------------------------------------------------- loading


def _parse_metadata(session: ort.InferenceSession) -> dict:
    """Model metadata_props with JSON values decoded (plain strings kept as they are)."""
    parsed = {}
    for key, value in session.get_modelmeta().custom_metadata_map.items():
        try:
            parsed[key] = json.loads(value)
        except ValueError:
            parsed[key] = value
    return parsed


def _names(meta: dict, key: str, default: tuple[str, ...], width: int | None, what: str, path: Path) -> list[str]:
    """A list of names from the metadata (or the default if absent), checked against the tensor width."""
    names = meta.get(key)
    if names is None:
        if width not in (None, len(default)):
            raise InputError(f"{path}: the model's {what} has {width} columns and no {key} metadata; "
                             f"lhcbpid models have {len(default)}: export it again with `lhcbpid train`")
        return list(default)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise InputError(f"{path}: metadata {key} is not a JSON list of names; export the model again")
    if len(set(names)) != len(names):
        raise InputError(f"{path}: metadata {key} repeats a name; export the model again")
    if width is not None and width != len(names):
        raise InputError(f"{path}: the model's {what} has {width} columns but {key} lists {len(names)}; "
                         f"export the model again")
    return names


def _width(arg: ort.NodeArg, what: str, path: Path) -> int | None:
    """The column count of a float [N, K] tensor (None if K is symbolic); InputError for other shapes or types."""
    if arg.type != "tensor(float)":
        raise InputError(f"{path}: the model's {what} {arg.name!r} is {_ONNX_TYPES.get(arg.type, arg.type)}, "
                         f"expected float32; export the model again")
    if len(arg.shape) != 2:
        raise InputError(f"{path}: the model's {what} {arg.name!r} has shape {_shape(arg.shape)}, expected [N, K]; "
                         f"export the model again")
    return arg.shape[1] if isinstance(arg.shape[1], int) else None


def _output_arg(session: ort.InferenceSession) -> ort.NodeArg:
    """The probabilities output (by name, else the first output)."""
    outputs = session.get_outputs()
    return next((o for o in outputs if o.name == OUTPUT_NAME), outputs[0])


def inference_session(model: str | bytes) -> ort.InferenceSession:
    """An onnxruntime CPU session for predict_proba, which runs THREADS single-threaded calls at once."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def load_model(path: Path) -> tuple[ort.InferenceSession, dict]:
    """An onnxruntime session and the decoded metadata (feature_names and class_names always present)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file; train one with `lhcbpid train` or pass --model PATH")
    try:
        session = inference_session(str(path))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several unrelated types for bad files
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"{path} is not a valid ONNX model ({detail[:160]}); export it again with "
                         f"`lhcbpid train` or pass the right --model") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise InputError(f"{path}: the model takes {len(inputs)} inputs, expected one [N, 49] float32 matrix; "
                         f"export it again")
    meta = _parse_metadata(session)
    meta["feature_names"] = _names(meta, "feature_names", FEATURES, _width(inputs[0], "input", path),
                                   "input", path)
    meta["class_names"] = _names(meta, "class_names", CLASSES, _width(_output_arg(session), "output", path),
                                 "output", path)
    return session, meta


def predict_proba(session: ort.InferenceSession, X: np.ndarray) -> np.ndarray:
    """Class probabilities, float32 [n, classes], for a float32 [n, features] matrix (slices run in parallel)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    feed, fetch = session.get_inputs()[0].name, [_output_arg(session).name]
    slices = THREADS * -(-len(X) // (THREADS * INFERENCE_ROWS))  # a multiple of THREADS, so no thread idles ...
    slices = max(1, min(slices, len(X) // MIN_SLICE_ROWS))  # ... unless slices would get too small to pay off
    bounds = np.linspace(0, len(X), slices + 1).astype(int)
    with ThreadPoolExecutor(min(THREADS, slices)) as pool:
        parts = list(pool.map(lambda a, b: session.run(fetch, {feed: X[a:b]})[0], bounds[:-1], bounds[1:]))
    return np.asarray(parts[0] if len(parts) == 1 else np.concatenate(parts), dtype=np.float32)


# --------------------------------------------------------------------------- writing


def fixed_decimals(values: np.ndarray, decimals: int) -> pa.Array:
    """Numbers as strings with exactly `decimals` digits after the point (vectorised, no Python loop)."""
    scale = 10**decimals
    scaled = np.rint(np.asarray(values, dtype=np.float64) * scale).astype(np.int64)
    magnitude = np.abs(scaled)
    whole = pc.cast(pa.array(magnitude // scale), pa.string())
    fraction = pc.utf8_lpad(pc.cast(pa.array(magnitude % scale), pa.string()), width=decimals, padding="0")
    sign = pc.if_else(pa.array(scaled < 0), "-", "")
    return pc.binary_join_element_wise(sign, pc.binary_join_element_wise(whole, fraction, "."), "")


def _output_schema(classes: list[str], submission: bool) -> pa.Schema:
    """ID then one column per class (course order and fixed-decimal text for a submission)."""
    if submission:
        return pa.schema([(ID, pa.int64())] + [(name, pa.string()) for name in SUBMISSION_CLASSES])
    return pa.schema([(ID, pa.int64())] + [(name, pa.float32()) for name in classes])


def _output_table(ids: np.ndarray, P: np.ndarray, classes: list[str], submission: bool) -> pa.Table:
    """ID plus one probability column per class, as _output_schema describes."""
    if submission:
        columns = [fixed_decimals(P[:, classes.index(name)], SUBMISSION_DECIMALS) for name in SUBMISSION_CLASSES]
    else:
        columns = [pa.array(P[:, k]) for k in range(len(classes))]
    return pa.Table.from_arrays([pa.array(ids, pa.int64()), *columns], schema=_output_schema(classes, submission))


def _write_table(writer: pacsv.CSVWriter, ids: np.ndarray, P: np.ndarray, classes: list[str], submission: bool) -> None:
    """Format one batch and append it to the CSV (runs in the writer thread)."""
    writer.write_table(_output_table(ids, P, classes, submission))


def _output_stream(path: Path, gzip: bool):
    """A binary file to write the CSV to: gzip (ISA-L, compressing in its own thread) or plain."""
    return igzip_threaded.open(path, "wb", compresslevel=_GZIP_LEVEL, threads=1) if gzip else pa.OSFile(str(path), "wb")


def _check_probabilities(P: np.ndarray, model: Path, first_row: int, X: np.ndarray | None = None) -> None:
    """InputError if the model produced NaN or inf, naming the row (extreme inputs are the usual cause)."""
    bad = ~np.isfinite(P)
    if bad.any():
        index = int(np.argmax(bad.any(axis=1)))
        largest = f" (its largest absolute value is {float(np.max(np.abs(X[index]))):.3g})" if X is not None else ""
        raise InputError(f"{model}: the model produced NaN or inf for row {first_row + index + 1:,}{largest}; "
                         f"check that row's values, or export the model again if every row fails")


def _output_path(out: Path, submission: bool) -> Path:
    """The file to write: a submission is always gzipped, so it gets a .gz name."""
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out} is a directory; pass a file name with --out, e.g. --out predict.csv")
    if submission and not out.name.endswith(".gz"):
        out = out.with_name(out.name + ".gz")
        print(f"lhcbpid: a submission is gzipped: writing {out}", file=sys.stderr)
    return out


def read_ahead(items: Iterable, depth: int = 2) -> Iterator:
    """Yield the items of `items`, produced by a background thread up to `depth` ahead (its errors re-raised here)."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def offer(entry: tuple) -> bool:
        """Put an entry once there is room; False if the consumer has gone."""
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            offer((done, e))

    worker = threading.Thread(target=produce, name="lhcbpid-reader", daemon=True)
    worker.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _progress(source: Path) -> tqdm:
    """A tqdm bar on stderr counting rows (and rows/s); quiet when stderr is not a terminal."""
    return tqdm(desc=f"predict {source.name}", unit=" rows", unit_scale=True, file=sys.stderr, disable=None)


def predict_file(model: Path, data: Path | None, out: Path, submission: bool = False, batch_rows: int = 25_000,
                 data_dir: Path | None = None) -> None:
    """Stream a data file through the model and write ID + class probabilities (CSV, gzip for .gz), atomically."""
    session, meta = load_model(model)
    classes, features = meta["class_names"], meta["feature_names"]
    if submission and not set(SUBMISSION_CLASSES) <= set(classes):
        raise InputError(f"{model}: a submission needs the classes {', '.join(SUBMISSION_CLASSES)}; this model has "
                         f"{', '.join(classes)}: use --format probabilities")
    source = resolve_data(data, "test", data_dir)
    out = _output_path(out, submission)
    if out.exists() and out.resolve() == source.resolve():
        raise InputError(f"{out} is the input file; choose another --out")
    gzip = submission or out.name.endswith(".gz")
    started, rows, pending = time.perf_counter(), 0, None
    with (atomic_path(out) as tmp, _progress(source) as bar, _output_stream(tmp, gzip) as sink,
          ThreadPoolExecutor(1, thread_name_prefix="lhcbpid-writer") as writing):
        writer = pacsv.CSVWriter(sink, _output_schema(classes, submission),
                                 write_options=pacsv.WriteOptions(quoting_style="none", quoting_header="none"))
        for ids, X in read_ahead(iter_batches(source, features, batch_rows)):
            P = predict_proba(session, X)
            _check_probabilities(P, Path(model), rows, X)
            if ids is None:
                ids = np.arange(rows, rows + len(X), dtype=np.int64)
            if pending is not None:
                pending.result()  # one table in flight: output order kept, memory bounded
            pending = writing.submit(_write_table, writer, ids, P, classes, submission)
            rows += len(X)
            bar.update(len(X))
        if pending is not None:
            pending.result()
        writer.close()
    elapsed = max(time.perf_counter() - started, 1e-9)
    print(f"lhcbpid: wrote {rows:,} rows to {out} ({rows / elapsed:,.0f} rows/s)", file=sys.stderr)


# --------------------------------------------------------------------------- describing


def _shape(shape: list) -> str:
    """[N, 49] style text for an onnxruntime shape (symbolic dims by name, unknown as ?)."""
    return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def _tensor_lines(args: list[ort.NodeArg]) -> list[str]:
    """One line per tensor: name, element type, shape."""
    return [f"  {a.name}: {_ONNX_TYPES.get(a.type, a.type)} {_shape(a.shape)}" for a in args]


def _value_lines(key: str, value) -> list[str]:
    """A metadata entry: scalars on one line, lists and objects as indented JSON."""
    if isinstance(value, (dict, list)):
        body = json.dumps(value, indent=2, sort_keys=False)
        return [f"  {key}:"] + [f"    {line}" for line in body.splitlines()]
    return [f"  {key}: {value if isinstance(value, str) else json.dumps(value)}"]


def describe_model(path: Path) -> str:
    """Human-readable summary of a model: tensors, classes, feature order and all metadata."""
    session, meta = load_model(path)
    raw = session.get_modelmeta()
    stored = set(raw.custom_metadata_map)
    lines = [f"model: {path} ({Path(path).stat().st_size:,} bytes)"]
    if raw.producer_name:
        lines.append(f"producer: {raw.producer_name} (graph {raw.graph_name})")
    lines += ["inputs:", *_tensor_lines(session.get_inputs()), "outputs:", *_tensor_lines(session.get_outputs())]
    assumed = " (not in the metadata: assumed lhcbpid order)"
    classes = meta["class_names"]
    lines.append(f"classes ({len(classes)}): {', '.join(classes)}{'' if 'class_names' in stored else assumed}")
    features = meta["feature_names"]
    lines.append(f"features ({len(features)}, in input order){'' if 'feature_names' in stored else assumed}:")
    lines += [f"  {i:2d} {name}" for i, name in enumerate(features)]
    others = [k for k in sorted(stored) if k not in ("feature_names", "class_names")]
    lines.append("metadata:" if others else "metadata: (none besides names)")
    for key in others:
        lines += _value_lines(key, meta[key])
    return "\n".join(lines)
