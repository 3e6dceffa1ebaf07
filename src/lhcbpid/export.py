"""Write the Keras model as ONNX (input `input` [N, 49], output `probabilities` [N, 6]) and prove it matches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lhcbpid.atomic import write_atomic
from lhcbpid.errors import ExportError
from lhcbpid.schema import CLASSES, FEATURES

OPSET = 17
#: IR version 8 is the newest that onnxruntime 1.16 (and every later release) loads.
IR_VERSION = 8
TOLERANCE = 1e-5


def to_onnx(model, metadata: dict[str, object]):
    """The model as an ONNX ModelProto with the metadata stored as JSON strings."""
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec([None, len(FEATURES)], tf.float32, name="input")]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    outputs = [o.name for o in proto.graph.output]
    if outputs != ["probabilities"]:
        raise ExportError(f"the converted model has outputs {outputs}, expected ['probabilities']")
    proto.ir_version = IR_VERSION
    proto.producer_name = "lhcbpid"
    entries = {"feature_names": list(FEATURES), "class_names": list(CLASSES), **metadata}
    del proto.metadata_props[:]
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value if isinstance(value, str) else json.dumps(value)
    return proto


def onnx_probabilities(model_bytes: bytes, X: np.ndarray, batch_rows: int = 262_144) -> np.ndarray:
    """Run ONNX bytes in onnxruntime over X in chunks."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["probabilities"], {"input": X[i:i + batch_rows]})[0]
                           for i in range(0, len(X), batch_rows)])


def export_onnx(model, path: Path, X_check: np.ndarray, keras_probabilities: np.ndarray,
                metadata: dict[str, object]) -> float:
    """Convert, check against Keras on X_check (max abs difference <= 1e-5, or ExportError), then write atomically."""
    import onnx

    proto = to_onnx(model, metadata)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    diff = float(np.max(np.abs(onnx_probabilities(data, X_check) - keras_probabilities)))
    if not diff <= TOLERANCE:
        raise ExportError(f"ONNX export differs from Keras by {diff:.2e} (> {TOLERANCE}); nothing written")
    write_atomic(path, data)
    return diff

