"""The homework's prediction example: run particles.onnx on test.csv.gz and write predict.csv
(ID and one probability per class), exactly as `lhcbpid predict` does (its options work here too)."""

import sys

from lhcbpid.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
