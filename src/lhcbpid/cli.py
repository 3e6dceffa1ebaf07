"""Command line: parse arguments, call one function per command, turn InputError into exit code 2."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from lhcbpid.errors import ExportError, InputError


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="download cache (default: $LHCBPID_DATA, else the user cache dir)")


def _add_split(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fractions", type=float, nargs=3, default=(0.70, 0.15, 0.15),
                   metavar=("TRAIN", "VAL", "TEST"), help="split fractions (default 0.70 0.15 0.15)")
    p.add_argument("--seed", type=int, default=42, help="seed for the split and the model (default 42)")


def _cmd_fetch(a: argparse.Namespace) -> None:
    from lhcbpid.data import fetch_dataset

    for name in a.files:
        print(fetch_dataset(name, a.data_dir))


def _cmd_simulate(a: argparse.Namespace) -> int:
    from lhcbpid import simulate

    if a.check:
        return 0 if simulate.calibration_check(rows=240_000 if a.rows is None else a.rows, seed=a.seed) else 1
    if a.out is None:
        raise InputError("simulate: --out FILE is required (for example --out training.csv.gz)")
    simulate.write_simulated(a.out, rows=1_200_000 if a.rows is None else a.rows, seed=a.seed, kind=a.kind)
    return 0


def _cmd_train(a: argparse.Namespace) -> None:
    from lhcbpid.train import run_training

    run_training(data=a.data, out=a.out, data_dir=a.data_dir, fractions=tuple(a.fractions),
                 seed=a.seed, config_path=a.config, search=a.search, trials=a.trials,
                 budget_minutes=a.budget_minutes, max_epochs=a.epochs, resume=a.resume)


def _cmd_predict(a: argparse.Namespace) -> None:
    from lhcbpid.predict import predict_file

    predict_file(model=a.model, data=a.data, out=a.out, submission=a.format == "submission",
                 batch_rows=a.batch_rows, data_dir=a.data_dir)


def _cmd_evaluate(a: argparse.Namespace) -> None:
    from lhcbpid.evaluate import evaluate_file

    evaluate_file(model=a.model, data=a.data, labels=a.labels, out=a.out)


def _cmd_info(a: argparse.Namespace) -> None:
    from lhcbpid.predict import describe_model

    print(describe_model(a.model))


def _cmd_benchmark(a: argparse.Namespace) -> None:
    from lhcbpid.benchmark import run_benchmark

    run_benchmark(data=a.data, out=a.out, quick=a.quick, seed=a.seed, data_dir=a.data_dir)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(prog="lhcbpid", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="download training.csv.gz and test.csv.gz (cached, verified)")
    # No `choices` here: Python 3.11's argparse checks the list default against them and rejects a bare `fetch`;
    # fetch_dataset rejects unknown names with exit 2 instead.
    p.add_argument("files", nargs="*", default=["training", "test"], metavar="FILE",
                   help="training and/or test (default: both)")
    _add_data_dir(p)
    p.set_defaults(run=_cmd_fetch)

    p = sub.add_parser("simulate", help="write simulated data with the real schema, or check calibration")
    p.add_argument("--rows", type=int, default=None, help="rows (default 1,200,000; 240,000 with --check)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--kind", choices=["training", "test"], default="training")
    p.add_argument("--out", type=Path, default=None, help="output .csv, .csv.gz or .parquet")
    p.add_argument("--check", action="store_true", help="print the calibration table; exit 1 if a target fails")
    p.set_defaults(run=_cmd_simulate)

    p = sub.add_parser("train", help="train, export particles.onnx and write the deliverables")
    p.add_argument("--data", type=Path, default=None, help="labelled file (default: the downloaded training.csv.gz)")
    p.add_argument("--out", type=Path, default=Path("."), help="output directory (default: current)")
    p.add_argument("--config", type=Path, default=None, help="model configuration JSON (default: the shipped one)")
    p.add_argument("--search", action="store_true", help="search hyperparameters on the validation split")
    p.add_argument("--trials", type=int, default=None, help="search budget in trials")
    p.add_argument("--budget-minutes", type=float, default=None, help="search budget in minutes")
    p.add_argument("--epochs", type=int, default=None, help="cap on epochs (for a quick run)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint in --out")
    _add_split(p)
    _add_data_dir(p)
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser("predict", help="run particles.onnx on a file and write probabilities")
    p.add_argument("--model", type=Path, default=Path("particles.onnx"))
    p.add_argument("--data", type=Path, default=None, help="input file (default: the downloaded test.csv.gz)")
    p.add_argument("--out", type=Path, default=Path("predict.csv"))
    p.add_argument("--format", choices=["probabilities", "submission"], default="probabilities")
    p.add_argument("--batch-rows", type=int, default=25_000,
                   help="rows read, scored and written at a time (memory stays flat; default 25000)")
    _add_data_dir(p)
    p.set_defaults(run=_cmd_predict)

    p = sub.add_parser("evaluate", help="score an ONNX model on a labelled file; write metrics and figures")
    p.add_argument("--model", type=Path, default=Path("particles.onnx"))
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--labels", type=Path, default=None, help="labels file for a test file (default: DATA.labels.csv if present)")
    p.add_argument("--out", type=Path, default=Path("evaluation"))
    p.set_defaults(run=_cmd_evaluate)

    p = sub.add_parser("info", help="show an ONNX model's inputs, outputs, classes and training metadata")
    p.add_argument("--model", type=Path, default=Path("particles.onnx"))
    p.set_defaults(run=_cmd_info)

    p = sub.add_parser("benchmark", help="train and score ours and the peers on one split")
    p.add_argument("--data", type=Path, default=None, help="labelled file (default: the downloaded training.csv.gz)")
    p.add_argument("--out", type=Path, default=Path("benchmark"))
    p.add_argument("--quick", action="store_true", help="a few thousand rows, seconds per model")
    p.add_argument("--seed", type=int, default=42)
    _add_data_dir(p)
    p.set_defaults(run=_cmd_benchmark)
    return parser


def _interrupt(signum, frame) -> None:
    """SIGTERM behaves like Ctrl-C: temporary files are removed and finished outputs stay."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad input exits 2 with one line on stderr."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = args.run(args)
    except InputError as e:
        print(f"lhcbpid {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the environment, not the program: a full disk, a read-only or missing directory
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"lhcbpid {args.command}: error: {detail}; check the path, its permissions and the free space",
              file=sys.stderr)
        return 2
    except ExportError as e:
        print(f"lhcbpid {args.command}: failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lhcbpid {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
