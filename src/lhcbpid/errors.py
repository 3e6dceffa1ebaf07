"""The one exception users see: bad input, reported as one line with exit code 2."""


class InputError(Exception):
    """A problem with the user's input; the message names the file, column or row, and the fix."""


class ExportError(RuntimeError):
    """The ONNX file does not reproduce the Keras model, so it is not written."""
