"""`lhcbpid benchmark`: our network against the peers, all trained on one shared split and scored alike on its test part.

One small function per model trains it on the train split (validation only for early stopping and
tuning) and returns a `Trained`: a predict function giving [N, 6] probabilities in schema class
order, the rows it trained on, its training time and its serialized size. `score` measures every
model the same way on the test split. The report (benchmark.md), every number (benchmark.json) and
ROC overlays are written atomically into the output directory.
"""

from __future__ import annotations

import os

# OpenMP threads (LightGBM, XGBoost) that spin while waiting are many times slower on a shared machine; set before
# any OpenMP library loads. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import pickle
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np

from lhcbpid import __version__
from lhcbpid.atomic import atomic_path, write_atomic
from lhcbpid.data import file_sha256, read_dataset, resolve_data, split_dataset
from lhcbpid.errors import InputError
from lhcbpid.evaluate import class_aucs
from lhcbpid.provenance import REAL, describe_source
from lhcbpid.schema import CLASSES, SENTINEL
from lhcbpid.train import SEARCH_TRIALS

FRACTIONS = (0.70, 0.15, 0.15)

#: Optuna trials for LightGBM: the same trial budget as our own network's hyperparameter search (SEARCH_TRIALS).
QUICK_SEARCH_TRIALS = 2

#: --quick keeps this many rows of the file (a seeded random subset).
QUICK_ROWS = 3_000

#: The course baseline trained on 120,000 rows; the homework's starting model on a subsample (batch size 10 is slow).
COURSE_GBC_ROWS = 120_000
HOMEWORK_ROWS = 100_000

#: A simulated AUC further than this from the published real-data AUC is a simulator fidelity problem.
FIDELITY_TOLERANCE = 0.015

#: Published real-data results (docs: /work/shared/reference/dataset.md, "Known results") of the peers we rerun.
REAL_RESULTS: dict[str, dict] = {
    "course baseline GBC": {
        "split": "120K train / 1.08M eval", "log_loss": 0.669,
        "auc": {"Electron": 0.9839, "Ghost": 0.9509, "Kaon": 0.9165, "Muon": 0.9879, "Pion": 0.9472,
                "Proton": 0.9149}},
    "course MLP 100-50": {
        "split": "1.08M train / 120K eval", "log_loss": 0.568,
        "auc": {"Electron": 0.9898, "Ghost": 0.9641, "Kaon": 0.9306, "Muon": 0.9930, "Pion": 0.9609,
                "Proton": 0.9290}},
}

#: Packages whose versions go into the report.
PACKAGES = ("lhcbpid", "numpy", "tensorflow-cpu", "keras", "tf2onnx", "onnxruntime", "scikit-learn", "lightgbm",
            "xgboost-cpu", "optuna")

#: Peers we do not run, and why.
SKIPPED = {"CatBoost": "not installed (not a dependency of lhcbpid)"}

PREDICT_BATCH = 65_536


def log(message: str) -> None:
    """Progress goes to stderr, one line at a time."""
    print(f"benchmark: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- budgets and inputs


@dataclass(frozen=True)
class Budget:
    """How much each model may train: the full run's budgets, or tiny ones for --quick."""

    our_epochs: int | None  # None: the shipped configuration's epochs
    lightgbm_trials: int
    boosting_rounds: int
    early_stopping_rounds: int
    mlp_epochs: int
    mlp_patience: int


FULL = Budget(our_epochs=None, lightgbm_trials=SEARCH_TRIALS, boosting_rounds=1000, early_stopping_rounds=50,
              mlp_epochs=40, mlp_patience=4)
QUICK = Budget(our_epochs=2, lightgbm_trials=QUICK_SEARCH_TRIALS, boosting_rounds=20, early_stopping_rounds=5,
               mlp_epochs=2, mlp_patience=1)


@dataclass(frozen=True)
class Parts:
    """The train and validation parts of the shared split, the seed and the budget."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    seed: int
    budget: Budget


@dataclass
class Trained:
    """A trained model as the scoring needs it."""

    name: str
    description: str
    predict: Callable[[np.ndarray], np.ndarray]
    train_rows: int
    validation_rows: int
    train_seconds: float
    size_bytes: int
    size_format: str
    details: dict = field(default_factory=dict)


def _subsample(n: int, rows: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of `rows` out of `n` (all of them if n <= rows)."""
    if n <= rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, rows, replace=False))


def _keras_size(model) -> int:
    """Bytes of the model saved as a .keras file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.stat().st_size


# --------------------------------------------------------------------------- the models, one function each


def train_ours(parts: Parts) -> Trained:
    """The shipped configuration, early stopping on validation; predictions and size from the exported ONNX model."""
    from lhcbpid.export import to_onnx
    from lhcbpid.features import fit_statistics
    from lhcbpid.model import config_dict, load_config
    from lhcbpid.predict import inference_session, predict_proba
    from lhcbpid.train import STATISTICS_ROWS, fit_model

    config = load_config()
    if parts.budget.our_epochs is not None:
        config = replace(config, epochs=parts.budget.our_epochs)
    started = time.perf_counter()
    statistics = fit_statistics(parts.X_train[:STATISTICS_ROWS])
    model, history = fit_model(config, statistics, parts.X_train, parts.y_train, parts.X_val, parts.y_val, parts.seed)
    seconds = time.perf_counter() - started
    onnx_bytes = to_onnx(model).SerializeToString()
    session = inference_session(onnx_bytes)

    return Trained("ours", "shipped configuration (lhcbpid default_config.json), ONNX in onnxruntime",
                   partial(predict_proba, session),
                   len(parts.y_train), len(parts.y_val), seconds, len(onnx_bytes), "ONNX",
                   {"config": config_dict(config), "epochs_run": len(history["loss"]),
                    "best_epoch": int(np.argmin(history["val_loss"])) + 1})


def train_lightgbm(parts: Parts) -> Trained:
    """LightGBM multiclass, tuned with a seeded TPE search on validation log loss; -999 left as a number."""
    import lightgbm as lgb
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = parts.budget
    base = {"objective": "multiclass", "num_class": len(CLASSES), "num_threads": 2, "deterministic": True,
            "force_row_wise": True, "seed": parts.seed, "verbosity": -1, "feature_pre_filter": False}
    train_set = lgb.Dataset(parts.X_train, parts.y_train, params=base, free_raw_data=False)
    val_set = lgb.Dataset(parts.X_val, parts.y_val, reference=train_set, params=base, free_raw_data=False)
    best: dict = {}

    def objective(trial: optuna.Trial) -> float:
        params = {**base,
                  "learning_rate": trial.suggest_float("learning_rate", 0.05, 0.3, log=True),
                  "num_leaves": trial.suggest_int("num_leaves", 15, 127, log=True),
                  "min_child_samples": trial.suggest_int("min_child_samples", 5, 500, log=True),
                  "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
                  "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
                  "bagging_freq": 1,
                  "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True)}
        started = time.perf_counter()
        booster = lgb.train(params, train_set, num_boost_round=budget.boosting_rounds, valid_sets=[val_set],
                            callbacks=[lgb.early_stopping(budget.early_stopping_rounds, verbose=False)])
        seconds = time.perf_counter() - started
        loss = float(booster.best_score["valid_0"]["multi_logloss"])
        trial.set_user_attr("rounds", int(booster.best_iteration))
        trial.set_user_attr("seconds", seconds)
        log(f"  LightGBM trial {trial.number + 1}/{budget.lightgbm_trials}: validation log loss {loss:.5f}, "
            f"{booster.best_iteration} rounds, {seconds:.0f} s")
        if not best or loss < best["loss"]:
            best.update(loss=loss, booster=booster, seconds=seconds)
        return loss

    started = time.perf_counter()
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=parts.seed))
    study.optimize(objective, n_trials=budget.lightgbm_trials)
    search_seconds = time.perf_counter() - started
    booster = best["booster"]
    rounds = booster.best_iteration
    return Trained("LightGBM", f"optuna TPE, {budget.lightgbm_trials} trials on validation log loss, early stopping",
                   lambda X: booster.predict(X, num_iteration=rounds), len(parts.y_train), len(parts.y_val),
                   best["seconds"], len(booster.model_to_string(num_iteration=rounds).encode()), "LightGBM text",
                   {"best_params": study.best_params, "rounds": int(rounds), "search_seconds": search_seconds,
                    "trials": [{"params": t.params, "validation_log_loss": t.value, **t.user_attrs}
                               for t in study.trials]})


def train_xgboost(parts: Parts) -> Trained:
    """XGBoost hist, depth 7, eta 0.1, missing = -999, early stopping on validation log loss."""
    import xgboost as xgb

    budget = parts.budget
    params = {"objective": "multi:softprob", "num_class": len(CLASSES), "tree_method": "hist", "max_depth": 7,
              "eta": 0.1, "nthread": 2, "seed": parts.seed, "eval_metric": "mlogloss"}
    started = time.perf_counter()
    train = xgb.QuantileDMatrix(parts.X_train, parts.y_train, missing=SENTINEL, nthread=2)
    val = xgb.QuantileDMatrix(parts.X_val, parts.y_val, missing=SENTINEL, nthread=2, ref=train)
    booster = xgb.train(params, train, num_boost_round=budget.boosting_rounds, evals=[(val, "validation")],
                        early_stopping_rounds=budget.early_stopping_rounds, verbose_eval=False)
    seconds = time.perf_counter() - started
    rounds = booster.best_iteration + 1
    booster = booster[:rounds]
    return Trained("XGBoost", f"hist, depth 7, eta 0.1, up to {budget.boosting_rounds} rounds, early stopping",
                   lambda X: booster.inplace_predict(X, missing=SENTINEL), len(parts.y_train), len(parts.y_val),
                   seconds, len(booster.save_raw("ubj")), "XGBoost UBJSON", {"params": params, "rounds": rounds})


def train_course_gbc(parts: Parts) -> Trained:
    """The course baseline: sklearn GradientBoostingClassifier on 120,000 rows of the train split."""
    from sklearn.ensemble import GradientBoostingClassifier

    rows = _subsample(len(parts.y_train), COURSE_GBC_ROWS, parts.seed)
    model = GradientBoostingClassifier(learning_rate=0.1, n_estimators=50, subsample=0.3, max_depth=3,
                                       min_samples_leaf=100, random_state=13)
    started = time.perf_counter()
    model.fit(parts.X_train[rows], parts.y_train[rows])
    seconds = time.perf_counter() - started
    return Trained("course baseline GBC", "sklearn GradientBoosting, 50 trees depth 3, subsample 0.3",
                   model.predict_proba, len(rows), 0, seconds, len(pickle.dumps(model)), "pickle",
                   {"params": model.get_params()})


def train_course_mlp(parts: Parts) -> Trained:
    """The course's best simple network: 100-50 ReLU on standard-scaled raw features, early stopping (Keras)."""
    from sklearn.preprocessing import StandardScaler

    from lhcbpid.backend import keras

    budget = parts.budget
    scaler = StandardScaler().fit(parts.X_train)
    keras.utils.set_random_seed(parts.seed)
    model = keras.Sequential([
        keras.Input(shape=(parts.X_train.shape[1],)),
        keras.layers.Normalization(mean=scaler.mean_, variance=scaler.scale_ ** 2),
        keras.layers.Dense(100, activation="relu"),
        keras.layers.Dense(50, activation="relu"),
        keras.layers.Dense(len(CLASSES), activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=budget.mlp_patience, restore_best_weights=True)
    started = time.perf_counter()
    history = model.fit(parts.X_train, parts.y_train, batch_size=256, epochs=budget.mlp_epochs,
                        validation_data=(parts.X_val, parts.y_val), shuffle=True, verbose=0, callbacks=[stop])
    seconds = time.perf_counter() - started
    val_loss = history.history["val_loss"]
    return Trained("course MLP 100-50", "Keras 100-50 ReLU, standard scaling fitted on train, Adam 1e-3, batch 256",
                   lambda X: model.predict(X, batch_size=PREDICT_BATCH, verbose=0), len(parts.y_train),
                   len(parts.y_val), seconds, _keras_size(model), ".keras",
                   {"epochs_run": len(val_loss), "best_epoch": int(np.argmin(val_loss)) + 1})


def train_homework_start(parts: Parts) -> Trained:
    """The homework's starting model: Dense(100, linear), Dense(6, softmax) on raw features, Adam 1e-4, 3 epochs, batch 10."""
    from lhcbpid.backend import keras

    rows = _subsample(len(parts.y_train), HOMEWORK_ROWS, parts.seed)
    keras.utils.set_random_seed(parts.seed)
    model = keras.Sequential([
        keras.Input(shape=(parts.X_train.shape[1],)),
        keras.layers.Dense(100),
        keras.layers.Dense(len(CLASSES), activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    started = time.perf_counter()
    model.fit(parts.X_train[rows], parts.y_train[rows], batch_size=10, epochs=3, shuffle=True, verbose=0)
    seconds = time.perf_counter() - started
    return Trained("homework start", "Dense(100, linear) + Dense(6, softmax), raw features, Adam 1e-4, 3 epochs, batch 10",
                   lambda X: model.predict(X, batch_size=PREDICT_BATCH, verbose=0), len(rows), 0, seconds,
                   _keras_size(model), ".keras", {"epochs_run": 3})


#: Report order. Training runs ours first and the slowest (the LightGBM search) last, so a long run that is
#: stopped early still leaves the other results in benchmark.json (rewritten after every model).
MODELS = ("ours", "LightGBM", "XGBoost", "course baseline GBC", "course MLP 100-50", "homework start")
TRAINING_ORDER: tuple[Callable[[Parts], Trained], ...] = (
    train_ours, train_xgboost, train_course_gbc, train_course_mlp, train_homework_start, train_lightgbm)


# --------------------------------------------------------------------------- scoring


def score(trained: Trained, X_test: np.ndarray, y_test: np.ndarray) -> tuple[dict, np.ndarray]:
    """Every model measured alike on the test split: AUCs, log loss, accuracy, speed; returns (result, probabilities)."""
    trained.predict(X_test[:1024])  # warm-up: first-call set-up is not inference speed
    started = time.perf_counter()
    P = np.asarray(trained.predict(X_test), dtype=np.float64)
    seconds = time.perf_counter() - started
    bad = ~np.isfinite(P).all(axis=1)
    if bad.any():  # a diverged network: score those rows as uniform rather than crash
        P[bad] = 1.0 / len(CLASSES)
    result = {
        "description": trained.description,
        "test_auc": class_aucs(y_test, P),
        "log_loss": float(-np.mean(np.log(np.clip(P[np.arange(len(y_test)), y_test], 1e-7, 1.0)))),
        "accuracy": float((P.argmax(axis=1) == y_test).mean()),
        "train_rows": int(trained.train_rows),
        "validation_rows": int(trained.validation_rows),
        "train_seconds": float(trained.train_seconds),
        "test_rows": int(len(y_test)),
        "predict_seconds": float(seconds),
        "rows_per_second": float(len(y_test) / max(seconds, 1e-9)),
        "size_bytes": int(trained.size_bytes),
        "size_format": trained.size_format,
        "non_finite_rows": int(bad.sum()),
        "details": trained.details,
    }
    return result, P


def fidelity(results: dict[str, dict], source: str) -> list[dict]:
    """Simulated (this run) vs published real-data AUC per class for the peers with known real results."""
    rows = []
    for name, real in REAL_RESULTS.items():
        if name not in results:
            continue
        ours = results[name]
        for c in CLASSES:
            diff = ours["test_auc"][c] - real["auc"][c]
            rows.append({"model": name, "metric": f"AUC {c}", "this_run": ours["test_auc"][c], "real": real["auc"][c],
                         "difference": diff, "flagged": abs(diff) > FIDELITY_TOLERANCE})
        diff = ours["log_loss"] - real["log_loss"]
        rows.append({"model": name, "metric": "log loss", "this_run": ours["log_loss"], "real": real["log_loss"],
                     "difference": diff, "flagged": False})
    return rows


def gaps(results: dict[str, dict]) -> list[dict]:
    """Where ours is below the best peer: per class AUC and log loss, with the margin."""
    peers = {n: r for n, r in results.items() if n != "ours"}
    if "ours" not in results or not peers:
        return []
    ours, found = results["ours"], []
    for c in CLASSES:
        name = max(peers, key=lambda n: peers[n]["test_auc"][c])
        margin = peers[name]["test_auc"][c] - ours["test_auc"][c]
        if margin > 0:
            found.append({"metric": f"AUC {c}", "ours": ours["test_auc"][c], "best_peer": name,
                          "peer": peers[name]["test_auc"][c], "behind_by": margin})
    name = min(peers, key=lambda n: peers[n]["log_loss"])
    margin = ours["log_loss"] - peers[name]["log_loss"]
    if margin > 0:
        found.append({"metric": "log loss", "ours": ours["log_loss"], "best_peer": name,
                      "peer": peers[name]["log_loss"], "behind_by": margin})
    return found


def hardest_class(results: dict[str, dict]) -> str:
    """The class whose best AUC over all models is the lowest."""
    return min(CLASSES, key=lambda c: max(r["test_auc"][c] for r in results.values()))


# --------------------------------------------------------------------------- report


def machine() -> dict:
    """CPU model, cores, RAM, OS, Python and key package versions."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 0
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": int(ram), "os": platform.platform(),
            "python": platform.python_version(), "packages": versions,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}


def _size(n: int) -> str:
    """Bytes as a short human-readable size."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def results_table(results: dict[str, dict]) -> str:
    """The Markdown table of models x (6 AUCs, log loss, accuracy, train time, rows/s, size, rows trained on)."""
    head = ["model", *CLASSES, "log loss", "accuracy", "train s", "predict rows/s", "size", "trained on (rows)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in results.items():
        cells = [name, *(f"{r['test_auc'][c]:.4f}" for c in CLASSES), f"{r['log_loss']:.4f}", f"{r['accuracy']:.4f}",
                 f"{r['train_seconds']:.0f}", f"{r['rows_per_second']:,.0f}", _size(r["size_bytes"]),
                 f"{r['train_rows']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fidelity_section(rows: list[dict], source: str, quick: bool) -> list[str]:
    """Simulated vs real AUC per class for the course peers, flags beyond the tolerance."""
    real_data = source == REAL
    what = "this run (real data)" if real_data else "simulated"
    flag = "differs from the published result" if real_data or quick else "SIMULATOR FIDELITY PROBLEM"
    out = ["## Simulated vs real: peers with published real-data results", ""]
    splits = ", ".join(f"{name}: {real['split']}" for name, real in REAL_RESULTS.items())
    out.append(f"Published numbers from the course notebooks ({splits}); "
               f"an AUC more than {FIDELITY_TOLERANCE} away is flagged.")
    if quick:
        out.append("Quick run: a few thousand rows and tiny budgets, so these differences say nothing about the simulator.")
    out += ["", f"| model | metric | {what} | real | difference | |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['model']} | {r['metric']} | {r['this_run']:.4f} | {r['real']:.4f} | {r['difference']:+.4f} | "
                   f"{'**' + flag + '**' if r['flagged'] else ''} |")
    flagged = [r for r in rows if r["flagged"]]
    out += ["", f"{len(flagged)} of {sum(r['metric'].startswith('AUC') for r in rows)} AUCs flagged"
            + (": " + ", ".join(f"{r['model']} {r['metric']} ({r['difference']:+.4f})" for r in flagged) if flagged
               else ".")]
    return out


def render_markdown(report: dict) -> str:
    """benchmark.md: machine, data, split, seed; the results table; fidelity; where ours is behind."""
    m, d, results = report["machine"], report["data"], report["models"]
    title = "lhcbpid benchmark" + (" (QUICK RUN: tiny data and budgets, not a measurement)" if report["quick"] else "")
    lines = [f"# {title}", "", f"**Data: {d['source']}.**", "",
             f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM, {m['os']}, "
             f"Python {m['python']}, OMP_WAIT_POLICY={m['omp_wait_policy'] or 'unset'}",
             "- Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
             f"- Data: `{d['path']}` ({d['source']}), sha256 `{d['sha256']}`, {d['rows_in_file']:,} rows"
             + (f", {d['rows_used']:,} used (seeded random subset, quick run)" if report["quick"] else ""),
             f"- Split: {json.dumps(report['split'])}",
             f"- Seed: {report['seed']}",
             f"- Wall time: {report['wall_seconds']:.0f} s; started {report['started']}",
             "", "## Results on the test split", "", results_table(results), "",
             "Per-class one-vs-rest ROC AUC and log loss on the same test rows for every model. "
             "Train time is the fit of the final model on this machine (2 threads everywhere); predict rows/s is "
             "the whole test split after a warm-up call. Size is the serialized model: "
             + "; ".join(f"{n} {r['size_format']}" for n, r in results.items()) + ".", ""]
    for name, r in results.items():
        extra = ""
        if "search_seconds" in r["details"]:
            extra = (f"; train time is the best trial's fit, the whole {len(r['details']['trials'])}-trial search took "
                     f"{r['details']['search_seconds']:.0f} s")
        lines.append(f"- **{name}**: {r['description']}; trained on {r['train_rows']:,} rows"
                     + (f", {r['validation_rows']:,} validation rows for early stopping" if r["validation_rows"] else "")
                     + extra + (f"; {r['non_finite_rows']:,} rows of non-finite output scored as uniform"
                                if r["non_finite_rows"] else "") + ".")
    lines += [f"- Skipped: " + "; ".join(f"{k} {v}" for k, v in report["skipped"].items()) + ".", ""]
    lines += _fidelity_section(report["fidelity"], d["source"], report["quick"]) + [""]
    lines += ["## Where ours is behind the best peer", ""]
    if report["gaps"]:
        lines += [f"- {g['metric']}: ours {g['ours']:.4f}, {g['best_peer']} {g['peer']:.4f} "
                  f"(behind by {g['behind_by']:.4f})" for g in report["gaps"]]
    else:
        lines.append("Nowhere: ours has the best AUC on every class and the lowest log loss.")
    lines += ["", f"ROC overlays: {', '.join(report['figures'])}.", ""]
    return "\n".join(lines)


def plot_overlay(y: np.ndarray, probabilities: dict[str, np.ndarray], results: dict[str, dict], cls: str,
                 path: Path, source: str) -> None:
    """ROC of one class vs the rest for every model, linear and log false-positive axes."""
    import matplotlib.pyplot as plt

    from lhcbpid import plots  # noqa: F401  (selects the Agg backend)

    k = CLASSES.index(cls)
    fig, (linear, logx) = plt.subplots(1, 2, figsize=(12, 5.4))
    for i, (name, P) in enumerate(probabilities.items()):
        fpr, tpr = _roc(y == k, P[:, k])
        for ax in (linear, logx):
            ax.plot(fpr, tpr, color=f"C{i}", lw=1.5, label=f"{name} (AUC = {results[name]['test_auc'][cls]:.4f})")
    linear.plot([0, 1], [0, 1], ls=":", color="black", lw=0.8)
    linear.set(xlim=(0, 1), ylim=(0, 1.005), title="linear scale")
    logx.set(xscale="log", xlim=(1e-4, 1), ylim=(0, 1.005), title="rest accepted on a log scale")
    for ax in (linear, logx):
        ax.set(xlabel="False positive rate (rest accepted)", ylabel=f"True positive rate ({cls} accepted)")
        ax.grid(alpha=0.3)
    linear.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{source.upper() if source != REAL else source}: {cls} vs the rest, all benchmark models")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _roc(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) of one class vs the rest."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(positive, scores)
    return fpr, tpr


# --------------------------------------------------------------------------- the command


def run_benchmark(data: Path | None, out: Path, quick: bool = False, seed: int = 42,
                  data_dir: Path | None = None) -> dict:
    """Train and score ours and every peer on one split; write benchmark.md, benchmark.json and ROC overlays."""
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    started = time.perf_counter()
    out = Path(out)
    path = resolve_data(data, "training", data_dir)
    source = describe_source(path)
    log(f"reading {path} ({source})")
    dataset = read_dataset(path, labelled=True)
    X, y = dataset.X, dataset.y
    rows_in_file = len(y)
    if quick:
        keep = _subsample(len(y), QUICK_ROWS, seed)
        X, y = X[keep], y[keep]
    missing = [c for k, c in enumerate(CLASSES) if not (y == k).any()]
    if missing:
        raise InputError(f"{path}: no rows of class {', '.join(missing)}; the benchmark needs all six classes")
    split = split_dataset(y, FRACTIONS, seed)
    absent = [c for k, c in enumerate(CLASSES) if not (y[split.test] == k).any()]
    if absent:
        raise InputError(f"{path}: too few rows ({len(y):,}) for every class to reach the test split "
                         f"(missing {', '.join(absent)}); use a larger file")
    parts = Parts(X[split.train], y[split.train], X[split.validation], y[split.validation], seed,
                  QUICK if quick else FULL)
    X_test, y_test = X[split.test], y[split.test]
    log(f"{len(y):,} rows{' (quick run)' if quick else ''}; split {split.describe()['sizes']} seed {seed}")

    report = {
        "lhcbpid_version": __version__, "complete": False, "quick": quick, "seed": seed, "started": started_at,
        "machine": machine(),
        "data": {"path": str(path), "source": source, "sha256": file_sha256(path), "rows_in_file": rows_in_file,
                 "rows_used": int(len(y))},
        "split": split.describe(), "budget": asdict(QUICK if quick else FULL), "skipped": SKIPPED, "models": {},
    }
    results: dict[str, dict] = {}
    probabilities: dict[str, np.ndarray] = {}
    for train in TRAINING_ORDER:
        log(f"training {train.__name__.removeprefix('train_')} ...")
        trained = train(parts)
        results[trained.name], probabilities[trained.name] = score(trained, X_test, y_test)
        r = results[trained.name]
        log(f"{trained.name}: trained in {trained.train_seconds:.1f} s on {trained.train_rows:,} rows; test log loss "
            f"{r['log_loss']:.4f}, {r['rows_per_second']:,.0f} rows/s")
        report["models"] = {n: results[n] for n in MODELS if n in results}
        report["wall_seconds"] = time.perf_counter() - started
        write_atomic(out / "benchmark.json", json.dumps(report, indent=2) + "\n")  # progress, in case of a stop

    results = report["models"]
    probabilities = {n: probabilities[n] for n in results}
    hardest = hardest_class(results)
    figures = [f"roc_{c.lower()}.png" for c in dict.fromkeys(("Electron", hardest))]
    report.update(complete=True, fidelity=fidelity(results, source), fidelity_tolerance=FIDELITY_TOLERANCE,
                  gaps=gaps(results), hardest_class=hardest, figures=figures)
    for name in figures:
        cls = next(c for c in CLASSES if name == f"roc_{c.lower()}.png")
        plot_overlay(y_test, probabilities, results, cls, out / name, source)
    report["wall_seconds"] = time.perf_counter() - started
    write_atomic(out / "benchmark.json", json.dumps(report, indent=2) + "\n")
    write_atomic(out / "benchmark.md", render_markdown(report))
    log(f"wrote benchmark.md, benchmark.json, {', '.join(figures)} to {out} in {report['wall_seconds']:.0f} s")
    print(results_table(results))
    return report
