"""Keras on TensorFlow, imported once with TensorFlow's C++ start-up lines kept off the terminal.

TensorFlow 2.21 prints absl and oneDNN notices on import that no environment variable silences;
they bury the progress lines. Python-level import errors still surface as usual.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_keras_quietly():
    """Import keras (and TensorFlow) with file descriptor 2 pointed at /dev/null."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return keras


keras = _import_keras_quietly()
ops = keras.ops
