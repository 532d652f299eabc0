"""Training phases of End2End: source pretraining and the thesis' two-stage fine-tuning (section 4.4).

Every phase is the same loop with different data: Adam on categorical cross-entropy with class-weighted
samples, L2 weight decay (see common.model), ReduceLROnPlateau and EarlyStopping on val_loss (the
latter restores the best weights), the best weights saved to `best.weights.h5`, and one history row
per epoch. `ResumableBackup` extends Keras' BackupAndRestore so that a killed run (a preempted GPU
pod) continues from its last finished epoch with the callbacks' memory intact: the early-stopping
and learning-rate counters, the best val_loss and the history rows are saved with the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from common import distribute, model_folder, telemetry
from common.artifacts import UnusableInput, atomic_write_csv, atomic_write_json, plain
from common.data import (
    Cohort,
    class_weights,
    evaluation_dataset,
    featurewise_mean,
    join_images_with_split,
    require_both_classes,
    training_dataset,
)
from common.determinism import configure_determinism
from common.model import (
    Architecture,
    build_end2end,
    computes_in_float32,
    parameter_counts,
    reconfigure,
    set_phase,
)
from common.model_folder import Preprocessing
from common.precision import training_policy
from common.profile import Profile, StageSettings

HISTORY_COLUMNS = ["epoch", "stage", "loss", "val_loss", "val_auc", "lr"]
BACKUP_DIR = "_resume"
BEST_WEIGHTS = "best.weights.h5"


def configure_runtime(profile: Profile) -> dict[str, Any]:
    """Deterministic kernels and fixed threads; mixed precision where the hardware computes it natively
    (common.precision), XLA only where a GPU can profit from it.

    XLA on this project's CPUs made full-size training 1.6x and demo inference 3.9x slower
    (benchmarks/training_throughput.py), so the profile's switch applies to GPU runs only.
    """
    determinism = configure_determinism(profile)
    gpus = tf.config.list_physical_devices("GPU")
    policy = training_policy(profile.model.mixed_precision, len(gpus))
    keras.mixed_precision.set_global_policy(policy)
    jit = profile.model.jit_compile and bool(gpus)
    return {"gpus": len(gpus), "mixed_precision": policy != "float32", "precision": policy, "jit_compile": jit,
            **determinism}


@keras.saving.register_keras_serializable(package="mammo")
class PositiveClassAUC(keras.metrics.AUC):
    """AUC of the cancer column only; Keras' AUC on a two-column softmax would pool both columns."""

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        return super().update_state(y_true[:, 1], y_pred[:, 1], sample_weight=sample_weight)


def compile_for(model: keras.Model, settings: StageSettings, *, jit_compile: bool) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[PositiveClassAUC(name="auc", num_thresholds=500)],
        jit_compile=jit_compile,
    )


class EpochLog(keras.callbacks.Callback):
    """history.csv, rewritten atomically after every epoch, and the per-epoch telemetry push."""

    def __init__(self, path: Path, stage: str, step: str):
        super().__init__()
        self.path, self.stage, self.step = path, stage, step
        self.rows: list[dict[str, Any]] = []
        self._lr = float("nan")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        row = {"epoch": epoch, "stage": self.stage, "lr": self._lr}
        for column in ("loss", "val_loss", "val_auc"):
            row[column] = float(logs.get(column, float("nan")))
        self.rows.append(row)
        self.write()
        telemetry.push_epoch(self.step, epoch, {k: v for k, v in row.items() if isinstance(v, float)})

    def write(self) -> None:
        atomic_write_csv(self.path, pd.DataFrame(self.rows, columns=HISTORY_COLUMNS))


def _save_weights_atomically(model: keras.Model, path: Path) -> None:
    """A kill during the write must never leave a truncated HDF5 where a good one was."""
    partial = path.with_name(f"partial.{path.name}")
    model.save_weights(str(partial), overwrite=True)
    os.replace(partial, path)


class BestWeights(keras.callbacks.Callback):
    """The best checkpoint: weights of the epoch with the lowest val_loss so far, written atomically."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.best: float | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        current = (logs or {}).get("val_loss")
        if current is not None and np.isfinite(current) and (self.best is None or current < self.best):
            self.best = float(current)
            _save_weights_atomically(self.model, self.path)


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that also keeps the other callbacks' state; must be the last callback.

    Last, because on_train_begin of EarlyStopping and friends resets their counters: the saved values
    are put back after that. Files are replaced atomically and the epoch marker is written last, so a
    kill at any moment leaves a loadable backup at most one epoch old.
    """

    STATE = "callbacks_state.json"
    FIELDS = {
        "early_stopping": ("wait", "best", "best_epoch"),
        "reduce_lr": ("wait", "best", "cooldown_counter"),
        "best_weights": ("best",),
    }

    def __init__(self, backup_dir: Path, *, log: EpochLog, early_stopping: keras.callbacks.EarlyStopping,
                 reduce_lr: keras.callbacks.ReduceLROnPlateau, best_weights: BestWeights) -> None:
        super().__init__(str(backup_dir))
        self.log = log
        self.stateful = {"early_stopping": early_stopping, "reduce_lr": reduce_lr, "best_weights": best_weights}
        self.resumed_from_epoch = 0

    def _save_model(self) -> None:
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        _save_weights_atomically(self.model, Path(self._weights_path))
        state = {name: {f: plain(getattr(cb, f)) for f in self.FIELDS[name]} for name, cb in self.stateful.items()}
        atomic_write_json(backup / self.STATE, {"epoch": self._current_epoch, "rows": self.log.rows, **state})
        atomic_write_json(Path(self._training_metadata_path), {"epoch": self._current_epoch, "batch": 0})

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        epoch = int(self.model._initial_epoch or 0)
        state_path = Path(self.backup_dir) / self.STATE
        if epoch == 0 or not state_path.is_file():
            return
        state = json.loads(state_path.read_text())
        self.resumed_from_epoch = epoch
        self.log.rows = [row for row in state["rows"] if row["epoch"] < epoch]
        self.log.write()
        for name, callback in self.stateful.items():
            for name_field, value in state[name].items():
                setattr(callback, name_field, value)
        early, best = self.stateful["early_stopping"], self.stateful["best_weights"]
        if early.restore_best_weights and best.path.is_file():
            early.best_weights = _weights_in_file(self.model, best.path)
        print(f"resuming after epoch {epoch} from {self.backup_dir}", file=sys.stderr)


def _weights_in_file(model: keras.Model, path: Path) -> list[np.ndarray]:
    """Model weights stored in a .weights.h5 file, leaving the model and its optimizer as they were."""
    current = model.get_weights()
    optimizer_state = [v.numpy() for v in model.optimizer.variables]
    model.load_weights(path)
    stored = model.get_weights()
    model.set_weights(current)
    for variable, value in zip(model.optimizer.variables, optimizer_state, strict=True):
        variable.assign(value)
    return stored


@dataclass
class FitOutcome:
    history: pd.DataFrame
    best_epoch: int | None
    best_val_loss: float | None
    resumed_from_epoch: int
    epochs_run: int = field(init=False)

    def __post_init__(self) -> None:
        self.epochs_run = len(self.history)


def fit(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset,
    settings: StageSettings,
    out_dir: Path,
    *,
    step: str,
    fingerprint: str,
    verbose: int = 2,
) -> FitOutcome:
    """Run one phase to completion (or early stop), resuming a killed run of the same fingerprint."""
    backup = out_dir / BACKUP_DIR
    _discard_foreign_backup(backup, fingerprint)
    log = EpochLog(out_dir / "history.csv", settings.stage, step)
    early = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings.early_stopping_patience, restore_best_weights=True
    )
    reduce_lr = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=settings.reduce_lr_patience, factor=0.1)
    best = BestWeights(out_dir / BEST_WEIGHTS)
    resume = ResumableBackup(backup, log=log, early_stopping=early, reduce_lr=reduce_lr, best_weights=best)
    model.fit(
        train,
        validation_data=validation,
        epochs=settings.epochs,
        callbacks=[early, reduce_lr, best, log, resume],
        shuffle=False,  # the dataset reshuffles its file names every epoch
        verbose=verbose,
    )
    history = pd.DataFrame(log.rows, columns=HISTORY_COLUMNS)
    finite = history.dropna(subset=["val_loss"])
    best_row = finite.loc[finite["val_loss"].idxmin()] if not finite.empty else None
    return FitOutcome(
        history=history,
        best_epoch=None if best_row is None else int(best_row["epoch"]),
        best_val_loss=None if best_row is None else float(best_row["val_loss"]),
        resumed_from_epoch=resume.resumed_from_epoch,
    )


def _discard_foreign_backup(backup: Path, fingerprint: str) -> None:
    """A backup left by a run with other inputs or settings must not be resumed."""
    marker = backup / "fingerprint.txt"
    if backup.exists() and (not marker.is_file() or marker.read_text() != fingerprint):
        print(f"discarding {backup}: it belongs to a run with other inputs or settings", file=sys.stderr)
        shutil.rmtree(backup)
    backup.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class TrainingRun:
    """What a training step produced; jobs write it out and stage 2 scores with it."""

    model: keras.Model
    preprocessing: Preprocessing
    cohort: Cohort
    record: dict[str, Any]


def train_phase(**kwargs: Any) -> TrainingRun:
    """`_train_phase` under the pod's distribution strategy (common.distribute: mirrored over several GPUs).

    Threads are fixed first: creating the strategy initialises TensorFlow, after which they cannot change.
    """
    configure_determinism(kwargs["profile"])
    strategy = distribute.training_strategy()
    with strategy.scope():
        run = _train_phase(**kwargs)
    run.record["runtime"]["replicas"] = strategy.num_replicas_in_sync
    return run


def _train_phase(
    *,
    step: str,
    phase: str,
    images: Path,
    split: Path,
    out_dir: Path,
    profile: Profile,
    init_model: Path | None,
    source_name: str | None = None,
    verbose: int = 2,
) -> TrainingRun:
    """Train one phase on the train split of `images`, validating on its validation split: the starting model,
    the cohort at its input size, the preprocessing constants (`_phase_preprocessing`), then `fit`."""
    runtime = configure_runtime(profile)
    settings = profile.training.phase(phase)
    seed = profile.training.seed
    keras.utils.set_random_seed(seed)
    model, start = _starting_model(profile, settings, init_model)
    cohort, train, validation = _phase_cohort(images, split, model)
    prep = _phase_preprocessing(phase, start, train, source_name or Path(images).name, model)
    set_phase(model, phase)
    compile_for(model, settings, jit_compile=runtime["jit_compile"])

    weights = class_weights(train["label"])
    augmentation = profile.training.augmentation
    batch = settings.batch_size if settings.batch_size is not None else profile.training.batch_size
    train_ds = training_dataset(train, prep, batch_size=batch, augmentation=augmentation, weights=weights, seed=seed)
    val_ds = evaluation_dataset(validation, prep, batch_size=batch, labels=True, repeated=True)
    fingerprint = _fingerprint(
        asdict(settings), asdict(prep), seed, str(init_model), train[["image_id", "label"]].values.tolist()
    )
    outcome = fit(model, train_ds, val_ds, settings, out_dir, step=step, fingerprint=fingerprint, verbose=verbose)
    record = {
        "phase": phase,
        "settings": asdict(settings),
        "optimizer": "adam",
        "weight_decay_mode": "l2-kernel-regulariser",
        "loss": "categorical_crossentropy",
        "monitor": "val_loss",
        "augmentation": asdict(augmentation),
        "class_weights": {str(k): v for k, v in weights.items()},
        "counts": _phase_counts(train, validation, cohort),
        "parameters": parameter_counts(model),
        "init_model": None if init_model is None else str(init_model),
        "best_epoch": outcome.best_epoch,
        "best_val_loss": outcome.best_val_loss,
        "epochs_run": outcome.epochs_run,
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "seed": seed,
        "runtime": runtime,
    }
    return TrainingRun(model=model, preprocessing=prep, cohort=cohort, record=record)


def _starting_model(profile: Profile, settings: StageSettings,
                    init_model: Path | None) -> tuple[keras.Model, Preprocessing | None]:  # fmt: skip
    """A fresh End2End (pretraining from scratch) or the model folder a phase continues from, with its constants;
    either carries this phase's dropout and weight decay."""
    if init_model is None:
        return build_end2end(Architecture.from_profile(profile), dropout=settings.dropout,
                             weight_decay=settings.weight_decay), None  # fmt: skip
    loaded, start = model_folder.read(init_model)
    return reconfigure(loaded, dropout=settings.dropout, weight_decay=settings.weight_decay), start


def _phase_cohort(images: Path, split: Path, model: keras.Model) -> tuple[Cohort, pd.DataFrame, pd.DataFrame]:
    """The images of the model's input size, and their train and validation splits (each with both classes)."""
    cohort = join_images_with_split(images, split).with_size(int(model.input_shape[1]), int(model.input_shape[2]))
    cohort.warn()
    train, validation = cohort.split("train"), cohort.split("validation")
    require_both_classes(train, f"the train split of {images}")
    require_both_classes(validation, f"the validation split of {images}")
    return cohort, train, validation


def _phase_preprocessing(phase: str, start: Preprocessing | None, train: pd.DataFrame, source: str,
                         model: keras.Model) -> Preprocessing:  # fmt: skip
    """Pretraining computes the featurewise mean of its own training split (as Shen did for each dataset);
    fine-tuning keeps the mean of the model it starts from, as the thesis subtracted the public training mean
    from its private images."""
    if phase == "pretrain":
        height, width = int(model.input_shape[1]), int(model.input_shape[2])
        return Preprocessing(featurewise_mean(train["path"]), height, width, f"train split of {source}")
    if start is None:
        raise UnusableInput("fine-tuning needs --model: a folder with model.keras and preprocessing.json")
    return start


def _phase_counts(train: pd.DataFrame, validation: pd.DataFrame, cohort: Cohort) -> dict[str, int]:
    return {
        "train_images": len(train),
        "train_positive": int(train["label"].sum()),
        "validation_images": len(validation),
        "validation_positive": int(validation["label"].sum()),
        "left_out_images": len(cohort.problems),
    }


def save_model_folder(run: TrainingRun, out_dir: Path) -> keras.Model:
    """A trained model's folder: model.keras, preprocessing.json, training.json; history.csv is already there.

    The model is saved in float32 whatever policy it trained in (common.precision), and returned: what the
    folder holds is what a step that scores right after training should score with.
    """
    model = run.model
    if not computes_in_float32(model):
        settings = run.record["settings"]
        model = reconfigure(model, dropout=settings["dropout"], weight_decay=settings["weight_decay"], dtype="float32")
        set_phase(model, run.record["phase"])
    model_folder.write(out_dir, model, run.preprocessing, training=run.record)
    return model
