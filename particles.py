"""The homework's entry point: train with the defaults and write particles.onnx, particles.json,
roc.png, train.png and confusion.png, exactly as `lhcbpid train` does (its options work here too)."""

import sys

from lhcbpid.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
