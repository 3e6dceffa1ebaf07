"""Training: fit on the train split, choose on validation, measure once on test, write the five deliverables."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from lhcbpid import __version__
from lhcbpid.atomic import check_writable, write_atomic
from lhcbpid.backend import keras
from lhcbpid.data import file_sha256, read_dataset, resolve_data, split_dataset
from lhcbpid.errors import InputError
from lhcbpid.evaluate import classification_metrics, write_metrics
from lhcbpid.export import checked_probabilities, to_onnx, write_onnx
from lhcbpid.features import fit_statistics
from lhcbpid.model import ModelConfig, build_model, config_dict, load_config
from lhcbpid.plots import plot_confusion, plot_roc, plot_training
from lhcbpid.provenance import describe_source

#: Trials of the hyperparameter search when no budget is given; the benchmark gives LightGBM the same.
SEARCH_TRIALS = 8

#: Rows of the training split used to fit the preprocessing statistics (plenty for means and spreads).
STATISTICS_ROWS = 300_000

#: Hidden folder in --out holding the last epoch's state while training runs (removed when done).
CHECKPOINT_DIR = ".lhcbpid-checkpoint"


def log(message: str) -> None:
    """Progress goes to stderr, one line at a time."""
    print(message, file=sys.stderr, flush=True)


def _seed_states(model: keras.Model) -> dict[str, list[int]]:
    """Dropout random-generator states, which Keras does not save with the model."""
    return {layer.name: keras.ops.convert_to_numpy(layer.seed_generator.state).tolist()
            for layer in model.layers if getattr(layer, "seed_generator", None) is not None}


def save_checkpoint(folder: Path, model: keras.Model, best_weights: list[np.ndarray], state: dict) -> None:
    """Model with optimizer state, best weights and loop state for `--resume`; the `latest` pointer moves last."""
    epoch_dir = folder / f"epoch-{state['epoch']}"
    epoch_dir.mkdir(parents=True, exist_ok=True)
    model.save(epoch_dir / "model.keras")
    np.savez(epoch_dir / "best.npz", *best_weights)
    write_atomic(epoch_dir / "state.json", json.dumps({**state, "seed_states": _seed_states(model)}))
    write_atomic(folder / "latest", epoch_dir.name)
    for old in folder.glob("epoch-*"):
        if old != epoch_dir:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path, fingerprint: dict) -> tuple[keras.Model, list[np.ndarray], dict]:
    """The state save_checkpoint wrote, if it was made with the same data, split and configuration."""
    try:
        epoch_dir = folder / (folder / "latest").read_text().strip()
        state = json.loads((epoch_dir / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise InputError(f"{folder}: no checkpoint to resume from; run without --resume")
    if state["fingerprint"] != fingerprint:
        raise InputError(f"{folder}: the checkpoint was made with other data, split or settings;"
                         " rerun with the same options, or without --resume to start afresh")
    model = keras.models.load_model(epoch_dir / "model.keras")
    for layer in model.layers:
        if layer.name in state["seed_states"]:
            layer.seed_generator.state.assign(np.asarray(state["seed_states"][layer.name], dtype="uint32"))
    with np.load(epoch_dir / "best.npz", allow_pickle=False) as saved:
        best_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    return model, best_weights, state


def compile_model(config: ModelConfig, statistics: dict, n_train: int, seed: int) -> keras.Model:
    """A fresh network with AdamW and a cosine learning-rate decay over all planned steps."""
    keras.utils.set_random_seed(seed)
    model = build_model(config, statistics)
    steps = math.ceil(n_train / config.batch_size) * config.epochs
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay),
                  loss="sparse_categorical_crossentropy")
    return model


def fit_model(config: ModelConfig, statistics: dict, X_train: np.ndarray, y_train: np.ndarray,
              X_val: np.ndarray, y_val: np.ndarray, seed: int, report=None,
              checkpoint: Path | None = None, resume: bool = False,
              fingerprint: dict | None = None) -> tuple[keras.Model, dict]:
    """Epochs of seeded shuffles, early stopping on validation loss, best weights restored; checkpoints for --resume."""
    if resume:
        model, best_weights, state = load_checkpoint(checkpoint, fingerprint)
        log(f"resuming after epoch {state['epoch']} from {checkpoint}")
    else:
        model = compile_model(config, statistics, len(X_train), seed)
        best_weights = model.get_weights()
        state = {"fingerprint": fingerprint, "epoch": 0, "best": math.inf, "wait": 0,
                 "history": {"loss": [], "val_loss": []}}
    history = state["history"]
    while state["epoch"] < config.epochs and state["wait"] < config.patience:
        started = time.perf_counter()
        order = np.random.default_rng([seed, state["epoch"]]).permutation(len(X_train))
        fitted = model.fit(X_train[order], y_train[order], batch_size=config.batch_size, epochs=1,
                           shuffle=False, verbose=0)
        val_loss = float(model.evaluate(X_val, y_val, batch_size=65_536, verbose=0))
        history["loss"].append(float(fitted.history["loss"][-1]))
        history["val_loss"].append(val_loss)
        improved = val_loss < state["best"]
        if improved:
            best_weights = model.get_weights()
        state.update(epoch=state["epoch"] + 1, best=min(state["best"], val_loss), wait=0 if improved else state["wait"] + 1)
        lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        log(f"  epoch {state['epoch']:3d}/{config.epochs}  train {history['loss'][-1]:.4f}  val {val_loss:.4f}"
            f"  lr {lr:.2e}  {time.perf_counter() - started:5.1f} s{'  *' if improved else ''}")
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, best_weights, state)
        if report is not None:
            report(val_loss, state["epoch"] - 1)
    model.set_weights(best_weights)
    return model, history


def search_hyperparameters(base: ModelConfig, statistics: dict, X_train, y_train, X_val, y_val, seed: int,
                           trials: int | None, budget_minutes: float | None) -> tuple[ModelConfig, list[dict]]:
    """Optuna TPE search with median pruning, scored on validation loss only; returns the best config and the history."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if trials is None and budget_minutes is None:
        trials = SEARCH_TRIALS

    def objective(trial: optuna.Trial) -> float:
        config = replace(
            base,
            width=trial.suggest_categorical("width", [128, 256, 384]),
            depth=trial.suggest_int("depth", 2, 4),
            dropout=trial.suggest_float("dropout", 0.0, 0.3),
            batch_norm=trial.suggest_categorical("batch_norm", [True, False]),
            learning_rate=trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
            weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
            batch_size=trial.suggest_categorical("batch_size", [2048, 4096, 8192]),
        )
        log(f"trial {trial.number + 1}{f'/{trials}' if trials else ''}: {json.dumps(trial.params)}")

        def report(val_loss: float, epoch: int) -> None:
            trial.report(val_loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        _, history = fit_model(config, statistics, X_train, y_train, X_val, y_val, seed, report)
        best = min(history["val_loss"])
        log(f"trial {trial.number + 1}: best validation loss {best:.5f}")
        return best

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3))
    study.optimize(objective, n_trials=trials, timeout=budget_minutes * 60 if budget_minutes else None)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise RuntimeError("the search completed no trial; raise --trials or --budget-minutes")
    history = [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
                "epochs": len(t.intermediate_values)} for t in study.trials]
    return replace(base, **study.best_params), history


def write_deliverables(out: Path, model: keras.Model, history: dict, X_test: np.ndarray, y_test: np.ndarray,
                       provenance: dict) -> dict:
    """Export and check ONNX, score it once on the test split, write particles.json, metrics.json and the figures."""
    proto = to_onnx(model)
    P_test, parity = checked_probabilities(proto, X_test, model.predict(X_test, batch_size=65_536, verbose=0))
    metrics = classification_metrics(y_test, P_test)  # measured once, with the shipped ONNX model
    write_onnx(proto, out / "particles.onnx",
               {**provenance, "metrics": {k: metrics[k] for k in ("test_auc", "log_loss", "accuracy")}})
    write_metrics(out, metrics, {**provenance, "onnx_max_abs_difference": parity, "history": history})
    source = provenance["source"]
    plot_roc(y_test, P_test, metrics["test_auc"], out / "roc.png", source)
    plot_training(history, out / "train.png", source)
    plot_confusion(np.asarray(metrics["confusion_counts"]), out / "confusion.png", source)
    return metrics


def run_training(data: Path | None, out: Path, data_dir: Path | None = None,
                 fractions: tuple[float, float, float] = (0.70, 0.15, 0.15), seed: int = 42,
                 config_path: Path | None = None, search: bool = False, trials: int | None = None,
                 budget_minutes: float | None = None, max_epochs: int | None = None, resume: bool = False) -> dict:
    """The main job: read, split, (search,) train, export and check ONNX, write metrics and figures."""
    started = time.perf_counter()
    out = Path(out)
    path = resolve_data(data, "training", data_dir)
    config = load_config(config_path)
    if max_epochs is not None:
        config = replace(config, epochs=max(1, min(config.epochs, max_epochs)))
    log(f"reading {path}")
    dataset = read_dataset(path, labelled=True)
    X, y = dataset.X, dataset.y
    split = split_dataset(y, fractions, seed)
    source = describe_source(path)
    log(f"{len(X):,} rows ({source}); split {split.describe()['sizes']} seed {seed}")
    check_writable(out)

    statistics = fit_statistics(X[split.train[:STATISTICS_ROWS]])
    X_train, y_train, X_val, y_val = X[split.train], y[split.train], X[split.validation], y[split.validation]
    if search:
        log("hyperparameter search on the validation split")
        config, trials_run = search_hyperparameters(config, statistics, X_train, y_train, X_val, y_val,
                                                    seed, trials, budget_minutes)
        write_atomic(out / "config.json", json.dumps(config_dict(config), indent=2) + "\n")
        write_atomic(out / "search.json", json.dumps({"chosen": config_dict(config), "trials": trials_run},
                                                     indent=2) + "\n")
    log(f"training {json.dumps(config_dict(config))}")
    sha256 = file_sha256(path)
    provenance = {"data": str(path), "data_sha256": sha256, "source": source, "split": split.describe(),
                  "config": config_dict(config), "lhcbpid_version": __version__}
    checkpoint = out / CHECKPOINT_DIR
    fingerprint = {"data_sha256": sha256, "split": split.describe(), "config": config_dict(config)}
    try:
        fit_started = time.perf_counter()
        model, history = fit_model(config, statistics, X_train, y_train, X_val, y_val, seed,
                                   checkpoint=checkpoint, resume=resume, fingerprint=fingerprint)
        provenance["timings"] = {"fit_seconds": time.perf_counter() - fit_started, "epochs": len(history["loss"])}
        metrics = write_deliverables(out, model, history, X[split.test], y[split.test], provenance)
    except KeyboardInterrupt:
        log(f"interrupted: earlier deliverables in {out} are untouched; continue with the same command and --resume")
        raise
    except BaseException:
        shutil.rmtree(checkpoint, ignore_errors=True)
        raise
    shutil.rmtree(checkpoint, ignore_errors=True)
    log(f"test ({len(split.test):,} rows, {source}): log loss {metrics['log_loss']:.4f}  "
        + "  ".join(f"{c} {a:.4f}" for c, a in metrics["test_auc"].items()))
    log(f"wrote particles.onnx, particles.json, metrics.json, roc.png, train.png, confusion.png to {out}"
        f" in {time.perf_counter() - started:.0f} s")
    return metrics
