"""Convert the Keras model to ONNX (input `input` [N, 49], output `probabilities` [N, 6]) and prove it matches."""

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


def inference_model(model):
    """The same network for inference only: each BatchNormalization folded into the Dense layer before it, no Dropout.

    Fewer, larger ONNX nodes: a folded layer is one matrix product plus bias instead of three passes over its output."""
    from lhcbpid.backend import keras

    layers = [layer for layer in model.layers if not isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout))]
    inputs = h = keras.Input(shape=model.input_shape[1:], dtype="float32", name=model.inputs[0].name)
    i = 0
    while i < len(layers):
        layer, following = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, keras.layers.Dense) and isinstance(following, keras.layers.BatchNormalization):
            kernel, *bias = (np.asarray(w, dtype=np.float64) for w in layer.get_weights())
            gamma, beta, mean, variance = (np.asarray(w, dtype=np.float64) for w in following.get_weights())
            scale = gamma / np.sqrt(variance + following.epsilon)
            shift = ((bias[0] if bias else 0.0) - mean) * scale + beta
            folded = keras.layers.Dense(layer.units, activation=layer.activation, name=layer.name)
            h = folded(h)
            folded.set_weights([(kernel * scale).astype(np.float32), shift.astype(np.float32)])
            i += 2
        else:
            h = layer(h)
            i += 1
    return keras.Model(inputs, h, name=model.name)


def to_onnx(model):
    """The Keras model, folded for inference, as an ONNX ModelProto checked by onnx's checker."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec([None, len(FEATURES)], tf.float32, name="input")]
    proto, _ = tf2onnx.convert.from_keras(inference_model(model), input_signature=spec, opset=OPSET)
    outputs = [o.name for o in proto.graph.output]
    if outputs != ["probabilities"]:
        raise ExportError(f"the converted model has outputs {outputs}, expected ['probabilities']")
    for value in (proto.graph.input[0], proto.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "N"  # rows: any number
    proto.ir_version = IR_VERSION
    proto.producer_name = "lhcbpid"
    onnx.checker.check_model(proto)
    return proto


def checked_probabilities(proto, X: np.ndarray, keras_probabilities: np.ndarray) -> tuple[np.ndarray, float]:
    """The ONNX model's probabilities on X, after checking they match Keras within TOLERANCE (else ExportError)."""
    from lhcbpid.predict import inference_session, predict_proba

    P = predict_proba(inference_session(proto.SerializeToString()), X)  # exactly as `lhcbpid predict` runs it
    diff = float(np.max(np.abs(P - keras_probabilities)))
    if not diff <= TOLERANCE:
        raise ExportError(f"ONNX export differs from Keras by {diff:.2e} (> {TOLERANCE}); nothing written")
    return P, diff


def write_onnx(proto, path: Path, metadata: dict[str, object]) -> None:
    """Store feature names, class names and `metadata` (as JSON strings) in the model; write it atomically."""
    entries = {"feature_names": list(FEATURES), "class_names": list(CLASSES), **metadata}
    del proto.metadata_props[:]
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value if isinstance(value, str) else json.dumps(value)
    write_atomic(path, proto.SerializeToString())
