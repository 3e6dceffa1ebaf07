"""The Keras network: raw 49 columns in, six class probabilities out, preprocessing inside."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path

from lhcbpid.backend import keras

from lhcbpid.errors import InputError
from lhcbpid.features import PidFeatures
from lhcbpid.schema import CLASSES, FEATURES


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the network and of its training."""

    width: int = 256
    depth: int = 3
    dropout: float = 0.1
    batch_norm: bool = True
    activation: str = "silu"
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    batch_size: int = 4096
    epochs: int = 40
    patience: int = 6


def load_config(path: Path | None = None) -> ModelConfig:
    """The configuration in a JSON file, or the shipped one (the best the search found)."""
    try:
        text = path.read_text() if path else resources.files("lhcbpid").joinpath("default_config.json").read_text()
        raw = json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read the configuration ({e}); pass a JSON file like the one `lhcbpid train --search` writes")
    raw = raw.get("config", raw)
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"{path}: unknown configuration key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}")
    return ModelConfig(**raw)


def config_dict(config: ModelConfig) -> dict:
    """The configuration as a JSON-ready dict."""
    return asdict(config)


def build_model(config: ModelConfig, statistics: dict) -> keras.Model:
    """A multilayer perceptron on the in-graph features, softmax over the six classes."""
    inputs = keras.Input(shape=(len(FEATURES),), dtype="float32", name="input")
    h = PidFeatures(**statistics, name="features")(inputs)
    for i in range(config.depth):
        h = keras.layers.Dense(config.width, use_bias=not config.batch_norm, name=f"dense_{i}")(h)
        if config.batch_norm:
            h = keras.layers.BatchNormalization(name=f"norm_{i}")(h)
        h = keras.layers.Activation(config.activation, name=f"act_{i}")(h)
        if config.dropout > 0:
            h = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(h)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="probabilities")(h)
    return keras.Model(inputs, outputs, name="lhcbpid")
