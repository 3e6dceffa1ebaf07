"""lhcbpid: identify particles in LHCb with a TensorFlow network shipped as ONNX."""

__version__ = "0.1.0"
