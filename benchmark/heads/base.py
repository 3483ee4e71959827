"""The temporal head contract: a sequence of frame embeddings -> a per-frame probability.

A head is an estimator in the scikit-learn sense: `__init__` only stores keyword parameters,
`fit` validates them and trains, and everything learnt ends in `_`. Subclasses only say how to
build their Keras model; windowing, training, early stopping and prediction live here, so every
head is trained and timed the same way (the reference's protocol):

* inputs scaled per feature as `feature_norm` says: not at all ("none"), with the mean and standard
  deviation of the training videos given to `fit` ("train"; stored with the head), or each video
  with its own ("per_video", no labels used);
* training windows of `sequence_length` frames (`mbr_bench.benchmark.features.sequences`),
  `batch_size` windows per step, shuffled each epoch;
* Adam(`learning_rate`), binary cross-entropy weighted per frame by the caller's sample weights;
* up to `max_epochs` epochs; with a validation video, early stopping on its PR-AUC (average
  precision over the whole video, stitched from windows) with `patience`, restoring the weights of
  the best epoch; without one, exactly `max_epochs` epochs;
* prediction, the validation scoring included, on half-overlapping windows stitched so that each
  frame comes from the window in which it has the most past (`features.sequences`).

TensorFlow is imported only inside `fit`, `build_model` and `predict_proba`.
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import time
import warnings
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
from sklearn.metrics import average_precision_score

from ...core.errors import ConfigError, DataError
from ...core.interrupts import deferred_interrupts, raise_if_interrupted
from ..features.sequences import (
    Scaling,
    feature_stats,
    prediction_starts,
    scale,
    stitch,
    training_windows,
)
from ...core.registry import Registry

# Windows per forward pass when predicting: bounds memory on long videos; the batch dimension of the
# compiled forward pass is dynamic, so a smaller last chunk does not retrace.
PREDICT_CHUNK_WINDOWS = 128

# |fusion_balance| from which a fused input's model sees one side only (the search space's range end).
SOLO_BALANCE = 2.0
# Input scaling of a head (`Head(feature_norm=...)`): see the Head docstring.
FEATURE_NORMS = ("none", "train", "per_video")
DEFAULT_FEATURE_NORM = "per_video"  # measured on the synthetic open field and real pose: see README, Protocol


class Head(ABC):
    """A temporal head: embeddings (frames, features) -> P(behaviour) per frame.

    Args:
        sequence_length: frames per training and prediction window (>= 2).
        batch_size: windows per optimisation step (>= 1).
        learning_rate: Adam learning rate (> 0).
        dropout: rate of the Dropout applied to the input embeddings, in [0, 1).
        max_epochs: upper bound on training epochs (>= 1).
        patience: epochs without a better validation PR-AUC before stopping (>= 1).
        seed: seeds Python, NumPy and TensorFlow at the start of `fit`, so a fit is reproducible.
        feature_norm: how input features are scaled, per feature, before the model sees them:
            "none" (as they are); "train" ((x - mean) / std with the mean and standard deviation of
            all frames of the training videos given to `fit`, never the validation video, applied to
            every input; kept in `feature_mean_` / `feature_std_` and saved with the head);
            "per_video" (each video, in training, validation and prediction alike, with its own
            mean and standard deviation over its frames; no labels used). A standard deviation below
            `features.sequences.FEATURE_STD_EPSILON` (a constant feature) counts as 1.
            Default DEFAULT_FEATURE_NORM.
        input_blocks: the input's column blocks, left to right, when it joins several embeddings
            (a fused backbone's part widths, e.g. (1280, 125)); after `feature_norm`, each block is
            weighted by sqrt(narrowest / width), so every block carries the same total variance and
            a wide appearance block cannot drown a narrow movement block at the first layer. Set by
            the pipeline from the backbone, not searched; None (the default): one block.
        fusion_balance: with two or more `input_blocks`, log10 of the first block's weight over the
            others' on top of that block scaling (-1: the first part at 1/10 of the rest, 0: equal);
            the larger side keeps weight 1. At SOLO_BALANCE or beyond (-SOLO_BALANCE or below) the
            model sees only the first block (only the others): the head is then that part's own
            head, initialised as it would be alone. Searched for a fused backbone's pairs
            (search_spaces/loader.py, FUSION_BALANCE); ignored with one block.
        **architecture: not accepted here; subclasses declare their architecture keywords.
    """

    name: ClassVar[str]  # set by HEADS.register
    # True for a head that trains a clip network itself (`finetune`): its inputs are the network's crops.
    reads_crops: ClassVar[bool] = False

    def __init__(
        self,
        *,
        sequence_length: int = 300,
        batch_size: int = 8,
        learning_rate: float = 1e-3,
        dropout: float = 0.5,
        max_epochs: int = 50,
        patience: int = 5,
        seed: int = 0,
        feature_norm: str = DEFAULT_FEATURE_NORM,
        input_blocks: Sequence[int] | None = None,
        fusion_balance: float = 0.0,
        **architecture: Any,
    ) -> None:
        if architecture:
            # Caught here rather than as a TypeError so a typo in a search space names the fix.
            raise ConfigError(
                f"head {self.name}: unknown parameter(s) {', '.join(sorted(architecture))}; "
                f"known: {', '.join(sorted(self.param_names()))}"
            )
        self.sequence_length = sequence_length
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.dropout = dropout
        self.max_epochs = max_epochs
        self.patience = patience
        self.seed = seed
        self.feature_norm = feature_norm
        self.input_blocks = None if input_blocks is None else tuple(input_blocks)
        self.fusion_balance = fusion_balance

    # -- parameters ---------------------------------------------------------------------------

    @classmethod
    def param_names(cls) -> set[str]:
        """Constructor keyword names, this class's and its bases' (search-space keys must be among them)."""
        names: set[str] = set()
        for klass in cls.__mro__:
            if "__init__" not in vars(klass) or klass is object:
                continue
            for parameter in inspect.signature(klass.__init__).parameters.values():
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                    names.add(parameter.name)
        return names

    def get_params(self) -> dict[str, Any]:
        """All constructor parameters, so that `type(head)(**head.get_params())` is an unfitted copy."""
        return {name: getattr(self, name) for name in sorted(self.param_names())}

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def check_params(self) -> None:
        """ConfigError naming the first parameter that cannot work; `fit` checks the same."""
        self._validate()

    def _validate(self) -> None:
        """Check every parameter; ConfigError naming the first one that cannot work."""
        check_int(self, "sequence_length", minimum=2)
        check_int(self, "batch_size", minimum=1)
        check_float(self, "learning_rate", low=0.0, low_inclusive=False)
        check_float(self, "dropout", low=0.0, high=1.0)
        check_int(self, "max_epochs", minimum=1)
        check_int(self, "patience", minimum=1)
        check_int(self, "seed", minimum=0)
        check_choice(self, "feature_norm", FEATURE_NORMS)
        if self.input_blocks is not None and (
            not self.input_blocks or not all(isinstance(w, (int, np.integer)) and w >= 1 for w in self.input_blocks)
        ):
            raise ConfigError(f"head {self.name}: input_blocks must be positive column counts, got {self.input_blocks}")
        check_float(self, "fusion_balance", low=-6.0, high=6.0)
        self._validate_architecture()

    def _validate_architecture(self) -> None:
        """Subclasses check their own architecture parameters here."""

    # -- model --------------------------------------------------------------------------------

    @abstractmethod
    def build_model(self, input_dim: int) -> Any:
        """A keras.Model mapping (batch, time, input_dim) to (batch, time, 1) sigmoid probabilities.

        Per-frame layers go through `per_frame`, so that heads saved in the older layout still load."""

    # Heads saved before 2026-12 wrapped each per-frame Dense in TimeDistributed. Keras 3 runs that
    # wrapper as a Python loop over the window's frames: a 300-frame window traced ~20,000 ops
    # (~12 s per fit) and ran 2-3x slower than the one Dense on the last axis that it computes.
    _time_distributed_layout = False

    def per_frame(self, layer: Any) -> Any:
        """`layer` (a Dense) applied to each frame of (batch, time, features); Dense maps the last axis."""
        if self._time_distributed_layout:
            return import_keras().layers.TimeDistributed(layer)
        return layer

    # -- training -----------------------------------------------------------------------------

    def fit(
        self,
        X: Sequence[np.ndarray],
        y: Sequence[np.ndarray],
        sample_weight: Sequence[np.ndarray],
        val: tuple[np.ndarray, np.ndarray] | None = None,
        on_epoch_end: Callable[[int, dict], None] | None = None,
        stop_early: bool = True,
        keep_val_history: bool = False,
    ) -> Head:
        """Train on whole videos.

        Args:
            X: per training video, (frames, features) embeddings.
            y: per training video, (frames,) 0/1 labels.
            sample_weight: per training video, (frames,) weights (`features.sequences.sample_weights`
                of the training labels).
            val: (frames, features) embeddings and (frames,) labels of one validation video: enables
                early stopping on its PR-AUC. None trains exactly `max_epochs` epochs.
            on_epoch_end: called as `on_epoch_end(epoch, logs)` after every epoch, `epoch` counting
                from 1 and `logs` holding loss, val_pr_auc (None without `val`) and seconds. An
                exception it raises (pruning, interrupt) stops training and propagates.
            stop_early: with `val`, stop after `patience` epochs without a better validation PR-AUC and
                restore the best epoch's weights. False trains exactly `max_epochs` epochs and keeps the
                last weights, scoring `val` every epoch (a protocol in which the scored video must not
                choose the training length; see `benchmark.search`).
            keep_val_history: keep every epoch's validation probabilities in `val_history_`
                ((epochs, frames) float32), so a caller can score the video at an epoch it chooses.

        Returns:
            self, with model_, history_ (one dict per epoch: epoch, loss, val_pr_auc, seconds),
            epochs_run_, best_epoch_ (1-based; epochs_run_ without `val`), best_val_pr_auc_,
            train_seconds_ (the training loop, validation scoring included; epoch 1 also holds
            graph tracing), seconds_per_epoch_ (train_seconds_ / epochs_run_), n_params_,
            input_dim_, and feature_mean_ / feature_std_ ((features,) float32 with
            feature_norm="train", else None) set.

        The validation video is scored every epoch exactly as `predict_proba` would score it (same
        scaling, windows and stitching), so `val_history_` rows are what `predict_proba` gave then.
        """
        self._validate()
        self._check_blocks(X[0].shape[1] if len(X) else 0)
        if self.feature_norm == "train":
            self.feature_mean_, self.feature_std_ = feature_stats(X)
            scalings: list[Scaling | None] = [self._weigh((self.feature_mean_, self.feature_std_))] * len(X)
        else:
            self.feature_mean_ = self.feature_std_ = None
            scalings = [self._weigh(feature_stats([Xv]) if self.feature_norm == "per_video" else None) for Xv in X]
        Xw, yw, ww = training_windows(X, y, sample_weight, self.sequence_length, scalings)
        del scalings
        input_dim = Xw.shape[2]
        kept = self._kept_columns()
        if kept is not None:
            Xw = Xw[:, :, kept]
        val_X = val_labels = val_scaling = None
        if val is not None:
            val_X, val_labels = self._check_val(val, input_dim)
            val_scaling = self._scaling(val_X)

        keras = import_keras()
        keras.utils.set_random_seed(self.seed)
        model = self.build_model(self._model_dim(input_dim))
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate), loss="binary_crossentropy")
        forward = _compiled_forward(model, self.sequence_length, self._model_dim(input_dim))

        val_history: list[np.ndarray] = []

        def score() -> float:
            probabilities = self._predict_video(forward, val_X, val_scaling)
            if keep_val_history:
                val_history.append(np.asarray(probabilities, np.float32))
            if not np.isfinite(probabilities).all():
                return math.nan
            return float(average_precision_score(val_labels, probabilities))

        tracker = _EpochTracker(
            keras.callbacks.Callback, score if val is not None else None,
            self.patience if stop_early else None, on_epoch_end,
        )
        started = time.perf_counter()
        with deferred_interrupts():  # Ctrl-C raised at a batch's end, not lost in a TensorFlow finaliser
            model.fit(
                Xw, yw, sample_weight=ww, batch_size=self.batch_size, epochs=self.max_epochs,
                shuffle=True, verbose=0, callbacks=[tracker.callback],
            )
        self._record_fit(model, tracker, val_history, val is not None, stop_early, time.perf_counter() - started)
        self._forward = forward
        self.input_dim_ = int(input_dim)
        return self

    def _record_fit(self, model: Any, tracker: _EpochTracker, val_history: list[np.ndarray], validated: bool,
                    stop_early: bool, train_seconds: float) -> None:
        """Once training ends: the best epoch's weights restored (early stopping), and what `fit` sets."""
        if stop_early and tracker.best_weights is not None:
            model.set_weights(tracker.best_weights)
        self.model_ = model
        self.history_ = tracker.history
        self.epochs_run_ = len(tracker.history)
        self.val_history_ = np.stack(val_history) if val_history else None
        if not validated or not stop_early:
            self.best_epoch_, self.best_val_pr_auc_ = self.epochs_run_, tracker.best_score
        elif tracker.best_weights is None:  # every epoch scored NaN (diverged): keep the last weights
            self.best_epoch_, self.best_val_pr_auc_ = self.epochs_run_, math.nan
        else:
            self.best_epoch_, self.best_val_pr_auc_ = tracker.best_epoch, tracker.best_score
        self.train_seconds_ = train_seconds
        self.seconds_per_epoch_ = train_seconds / max(self.epochs_run_, 1)
        self.n_params_ = int(model.count_params())

    def _check_val(self, val: tuple[np.ndarray, np.ndarray], input_dim: int) -> tuple[np.ndarray, np.ndarray]:
        val_X, val_y = np.asarray(val[0], np.float32), np.asarray(val[1]).reshape(-1)
        if val_X.ndim != 2 or val_X.shape[1] != input_dim or len(val_X) == 0:
            raise DataError(f"validation video: embeddings of shape {val_X.shape}, expected (frames, {input_dim}) "
                            "like the training videos; use the same backbone for all videos")
        if len(val_y) != len(val_X):
            raise DataError(f"validation video: {len(val_X)} embedding frames but {len(val_y)} labels; "
                            "labels and embeddings must have one row per frame")
        if not (val_y == 1).any():
            raise DataError(
                f"validation video: no positive frame among {len(val_y)}, so its PR-AUC (the early-stopping "
                "score) is undefined; choose a validation video showing the behaviour, or pass val=None"
            )
        return val_X, val_y

    # -- prediction ---------------------------------------------------------------------------

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(frames, features) embeddings of one video -> (frames,) float32 probabilities in [0, 1].

        Any number of frames: the video is scaled as `feature_norm` says, cut into half-overlapping
        windows, predicted PREDICT_CHUNK_WINDOWS windows at a time and stitched back, each frame from
        the window in which it has the most past (see `features.sequences`).
        """
        if not hasattr(self, "model_"):
            raise RuntimeError(f"head {self.name}: call fit before predict_proba")
        X = np.asarray(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.input_dim_:
            raise DataError(f"embeddings of shape {X.shape}, but head {self.name} was fitted on "
                            f"(frames, {self.input_dim_}); use the backbone it was trained with")
        if len(X) == 0:
            return np.zeros(0, np.float32)
        return self._predict_video(self._forward, X, self._scaling(X))

    def _scaling(self, X: np.ndarray) -> Scaling | None:
        """The (mean, std) that video `X` is scaled with under `feature_norm` and `input_blocks` (None: not scaled)."""
        if self.feature_norm == "train":
            return self._weigh((self.feature_mean_, self.feature_std_))
        if self.feature_norm == "per_video":
            return self._weigh(feature_stats([X]))
        return self._weigh(None)

    def _check_blocks(self, input_dim: int) -> None:
        if self.input_blocks is not None and sum(self.input_blocks) != input_dim:
            raise ConfigError(f"head {self.name}: input_blocks {list(self.input_blocks)} add up to "
                              f"{sum(self.input_blocks)} columns, but the inputs have {input_dim}; embed again")

    def _solo(self) -> str | None:
        """"first" or "rest" when the balance leaves the model one side only (see `fusion_balance`)."""
        if self.input_blocks is None or len(self.input_blocks) < 2 or abs(self.fusion_balance) < SOLO_BALANCE:
            return None
        return "first" if self.fusion_balance > 0 else "rest"

    def _kept_columns(self) -> np.ndarray | None:
        """The input columns the model sees (None: all of them)."""
        solo = self._solo()
        if solo is None:
            return None
        first = self.input_blocks[0]
        return np.arange(first) if solo == "first" else np.arange(first, sum(self.input_blocks))

    def _model_dim(self, input_dim: int) -> int:
        kept = self._kept_columns()
        return input_dim if kept is None else len(kept)

    def _weigh(self, scaling: Scaling | None) -> Scaling | None:
        """`scaling` with each input block's weight folded into its std (see `input_blocks`)."""
        if self.input_blocks is None or len(self.input_blocks) < 2:
            return scaling
        solo = self._solo()
        if solo == "first":
            return scaling  # the model sees the first block alone, scaled as it would be alone
        # Block scaling over the blocks the model sees; the balance only between both sides.
        seen = self.input_blocks[1:] if solo == "rest" else self.input_blocks
        narrowest = min(seen)
        if solo == "rest":
            balance = [1.0] * len(self.input_blocks)
        else:
            balance = [min(1.0, 10.0 ** self.fusion_balance)] + [min(1.0, 10.0 ** -self.fusion_balance)] * (
                len(self.input_blocks) - 1)
        block = [np.sqrt(narrowest / w) * b for w, b in zip(self.input_blocks, balance)]
        weights = np.repeat(block, self.input_blocks).astype(np.float32)
        if scaling is None:
            return np.zeros_like(weights), 1.0 / weights
        mean, std = scaling
        return mean, std / weights

    def _predict_video(
        self, forward: Callable[[np.ndarray], Any], X: np.ndarray, scaling: Scaling | None
    ) -> np.ndarray:
        """(frames, features) float32 of one video -> (frames,) float32 probabilities in [0, 1].

        The one prediction path, shared by `predict_proba` and the per-epoch validation scoring.
        Windows are built PREDICT_CHUNK_WINDOWS at a time, so memory stays bounded on hour-long videos.
        """
        starts = prediction_starts(len(X), self.sequence_length)
        parts = [
            np.asarray(forward(self._windows(X, starts[first : first + PREDICT_CHUNK_WINDOWS], scaling)))[..., 0]
            for first in range(0, len(starts), PREDICT_CHUNK_WINDOWS)
        ]
        probabilities = stitch(np.concatenate(parts, axis=0), starts, len(X))
        return np.clip(probabilities, 0.0, 1.0).astype(np.float32)

    # -- persistence --------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write the fitted head to `folder`: ``head.json`` (name, parameters, input size),
        ``model.weights.h5`` and, with feature_norm="train", ``feature_norm.npz`` (arrays ``mean`` and
        ``std``, the training statistics). Weights only, so loading needs no custom-object registry;
        `load_head` rebuilds the architecture from the parameters."""
        if not hasattr(self, "model_"):
            raise RuntimeError(f"head {self.name}: call fit before save")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        spec = {"name": self.name, "params": _plain(self.get_params()), "input_dim": self.input_dim_,
                "n_params": self.n_params_}
        (folder / HEAD_SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True))
        self.model_.save_weights(folder / HEAD_WEIGHTS)
        stats = folder / HEAD_FEATURE_STATS
        if self.feature_norm == "train":
            np.savez(stats, mean=self.feature_mean_, std=self.feature_std_)
        else:
            stats.unlink(missing_ok=True)  # a stale file from an earlier save to this folder
        return folder

    def _windows(self, X: np.ndarray, starts: np.ndarray, scaling: Scaling | None = None) -> np.ndarray:
        """(frames, features) -> (windows, sequence_length, features) float32, each window's frames
        scaled with `scaling` (`features.sequences.scale`), zero-padded at the end."""
        length = self.sequence_length
        windows = np.zeros((len(starts), length, X.shape[1]), np.float32)
        for row, start in enumerate(starts):
            chunk = X[start : start + length]
            windows[row, : len(chunk)] = scale(chunk, scaling)
        kept = self._kept_columns()
        return windows if kept is None else windows[:, :, kept]


HEADS: Registry[Head] = Registry("head")

HEAD_SPEC, HEAD_WEIGHTS, HEAD_FEATURE_STATS = "head.json", "model.weights.h5", "feature_norm.npz"


def with_pipeline_params(params: dict[str, Any], pipeline: dict[str, Any]) -> dict[str, Any]:
    """A trial's head parameters plus those the pipeline sets from the backbone, never searched: a fused
    backbone's `input_blocks`, a clip network's `network`, `network_weights` and `input_size`."""
    return {**params, **pipeline}


def load_head(folder: str | Path) -> Head:
    """A head written by `Head.save`, ready for `predict_proba`."""
    folder = Path(folder)
    spec_path = folder / HEAD_SPEC
    try:
        spec = json.loads(spec_path.read_text())
        name, params, input_dim = spec["name"], dict(spec["params"]), int(spec["input_dim"])
    except FileNotFoundError:
        raise DataError(f"{spec_path}: no saved head here; pass the folder a model was saved to") from None
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{spec_path}: not a saved head ({type(error).__name__}: {error}); "
                        "save the model again") from None
    # Heads saved before feature_norm existed scaled nothing, whatever today's default.
    params.setdefault("feature_norm", "none")
    head = HEADS.build(name, **params)
    head._validate()
    head._check_blocks(input_dim)
    head.feature_mean_ = head.feature_std_ = None
    if head.feature_norm == "train":
        head.feature_mean_, head.feature_std_ = _load_feature_stats(folder / HEAD_FEATURE_STATS, input_dim)
    keras = import_keras()
    keras.utils.set_random_seed(head.seed)
    model = head.build_model(head._model_dim(input_dim))
    try:
        _load_weights(head, model, folder / HEAD_WEIGHTS, head._model_dim(input_dim))
    except (OSError, ValueError) as error:
        raise DataError(f"{folder / HEAD_WEIGHTS}: cannot load the head's weights ({str(error).splitlines()[0][:160]}); "
                        "the file is damaged or from another architecture, save the model again") from None
    head.model_ = model
    head._forward = _compiled_forward(model, head.sequence_length, head._model_dim(input_dim))
    head.input_dim_ = input_dim
    head.n_params_ = int(model.count_params())
    return head


def _load_weights(head: Head, model: Any, path: Path, input_dim: int) -> None:
    """Load `path` into `model`; a file of the older TimeDistributed layout is read into that
    layout and its weights (the same arrays in the same order) copied over."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns before it raises on a layout mismatch
            model.load_weights(path)
        return
    except ValueError as error:
        first_error = error
    head._time_distributed_layout = True
    try:
        legacy = head.build_model(input_dim)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            legacy.load_weights(path)
    except ValueError:
        raise first_error from None
    finally:
        head._time_distributed_layout = False
    model.set_weights(legacy.get_weights())


def _load_feature_stats(path: Path, input_dim: int) -> Scaling:
    """The training mean and std saved beside a feature_norm="train" head."""
    try:
        with np.load(path) as stats:
            mean, std = np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
    except FileNotFoundError:
        raise DataError(f"{path}: missing; a head with feature_norm='train' needs the training statistics "
                        "saved beside its weights, save the model again") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        detail = (str(error).splitlines() or [""])[0][:160]
        raise DataError(f"{path}: cannot read the training statistics ({type(error).__name__}: {detail}); "
                        "save the model again") from None
    if mean.shape != (input_dim,) or std.shape != (input_dim,) or not (std > 0).all():
        raise DataError(f"{path}: training statistics of shapes {mean.shape} and {std.shape}, expected "
                        f"({input_dim},) each with std > 0; save the model again")
    return mean, std


def _plain(value: Any) -> Any:
    """`value` with NumPy scalars and tuples turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- helpers shared by the heads ------------------------------------------------------------------


def check_int(head: Head, name: str, minimum: int, hint: str | None = None) -> None:
    """ConfigError unless `head.<name>` is an integer >= minimum."""
    value = getattr(head, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(
            f"head {head.name}: {name} must be an integer >= {minimum}, got {value!r}; "
            + (hint or f"set {name} to {minimum} or more")
        )


def check_float(
    head: Head, name: str, low: float, high: float | None = None, low_inclusive: bool = True
) -> None:
    """ConfigError unless `head.<name>` is a number in [low, high) (or (low, ...) when not low_inclusive)."""
    value = getattr(head, name)
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and (high is None or value < high)
    if not ok:
        interval = f"{'[' if low_inclusive else '('}{low}, {high if high is not None else 'inf'})"
        raise ConfigError(f"head {head.name}: {name} must be a number in {interval}, got {value!r}; "
                          f"choose a value in that range")


def check_choice(head: Head, name: str, allowed: Collection[Any]) -> None:
    """ConfigError unless `head.<name>` is one of `allowed`."""
    value = getattr(head, name)
    if value not in allowed:
        raise ConfigError(f"head {head.name}: {name} must be one of {', '.join(map(repr, allowed))}, "
                          f"got {value!r}")


# -- Keras plumbing -------------------------------------------------------------------------------


def import_keras() -> ModuleType:
    """`import keras`, after TensorFlow has started quietly (`tf_runtime.import_tensorflow`)."""
    from ..tf_runtime import import_tensorflow

    import_tensorflow()
    import keras

    return keras


def _compiled_forward(model: Any, length: int, input_dim: int) -> Callable[[np.ndarray], Any]:
    """Inference-mode forward pass traced once: fixed window shape, dynamic batch dimension."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, length, input_dim), tf.float32)])
    def forward(windows: Any) -> Any:
        return model(windows, training=False)

    return forward


class _EpochTracker:
    """Per-epoch bookkeeping: history, validation score, early stopping and the best weights.

    Holds a Keras callback (built from `callback_base` so this module need not import Keras).
    """

    def __init__(
        self,
        callback_base: type,
        score: Callable[[], float] | None,
        patience: int | None,
        on_epoch_end: Callable[[int, dict], None] | None,
    ) -> None:
        self.score = score
        self.patience = patience
        self.user_callback = on_epoch_end
        self.history: list[dict[str, Any]] = []
        self.best_score: float | None = None
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None
        tracker = self

        class _Callback(callback_base):  # type: ignore[misc, valid-type]
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                tracker.epoch_started = time.perf_counter()

            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                raise_if_interrupted()

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                raise_if_interrupted()
                if tracker.end_epoch(self.model, epoch + 1, (logs or {}).get("loss")):
                    self.model.stop_training = True

        self.callback = _Callback()
        self.epoch_started = time.perf_counter()

    def end_epoch(self, model: Any, epoch: int, loss: Any) -> bool:
        """Record one epoch; True when training should stop."""
        val_pr_auc = self.score() if self.score is not None else None
        seconds = time.perf_counter() - self.epoch_started
        logs = {"loss": float(loss) if loss is not None else math.nan, "val_pr_auc": val_pr_auc, "seconds": seconds}
        self.history.append({"epoch": epoch, **logs})
        stop = False
        if self.score is not None:
            # Strict improvement, as Keras' EarlyStopping with min_delta=0; NaN never improves.
            if val_pr_auc is not None and not math.isnan(val_pr_auc) and (
                self.best_score is None or val_pr_auc > self.best_score
            ):
                self.best_score, self.best_epoch = val_pr_auc, epoch
                if self.patience is not None:  # without early stopping the last weights are kept
                    self.best_weights = [np.array(w, copy=True) for w in model.get_weights()]
            stop = self.patience is not None and epoch - self.best_epoch >= self.patience
        if self.user_callback is not None:
            self.user_callback(epoch, dict(logs))
        return stop
