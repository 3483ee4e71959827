"""The finetune mode of a clip backbone, as the second reference trains I3D and R(2+1)D: the clip network
and a classification layer trained end to end per fold, on each frame's centred clip.

Pair it with a clip backbone (`--backbones r2plus1d_18 --heads finetune`): the pipeline then caches that
network's input crops (uint8, `backbones.clips.ClipCrops`) instead of its embeddings, and sets `network`,
`network_weights` and `input_size` here (like a fused backbone's `input_blocks`), so a saved head
rebuilds its own network.

The reference's protocol: SGD with momentum 0.9, the learning rate decaying from 1e-3 to 5e-5 (here
exponentially over the fit's steps), dropout before the classification layer with keep-probability
0.36 (`dropout` 0.64), 16-frame clips (8 before the frame, 7 after). Each epoch trains on
`clips_per_epoch` clips whose frames are drawn with probability proportional to their sample weight:
the expected loss of weighting every frame, without spending most steps on the common class. With a
validation video, every frame of it is scored each epoch (PR-AUC), as for the other heads, and the
search's protocol decides whether that score may stop training. Batch normalisation keeps the
pretrained statistics and scales (Keras runs a frozen BatchNormalization in inference mode): batches
of 8 clips estimate them too noisily, and a network trained on batch statistics predicted 1.0 on every
frame of a held-out video in inference mode.

On a CPU this is slow (a clip of R(2+1)D-18 is ~40 GFLOPs forward): `mbr-bench run` refuses it without
`--allow-cpu-finetune` and says what it would cost. On a GPU that supports it, the network runs in
mixed precision (float16 compute, float32 weights and output).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from ...core.errors import ConfigError, DataError
from ...core.interrupts import deferred_interrupts, raise_if_interrupted
from ..backbones import BACKBONES, names_of_kind
from ..backbones.clips import centred_offsets, gather_clips
from ..tf_runtime import mixed_precision_supported
from .base import HEADS, Head, _EpochTracker, check_float, check_int, import_keras

PREDICT_CLIPS = 16  # clips per forward pass when scoring a video: bounds memory at 224 px


def _decay(keras: Any, first: float, last: float, steps: int) -> Any:
    """The learning rate from `first` to `last` exponentially over `steps` steps, then `last`."""

    class Decay(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step: Any) -> Any:
            ops = keras.ops
            progress = ops.minimum(ops.cast(step, "float32") / steps, 1.0)
            return first * ops.power(last / first, progress)

        def get_config(self) -> dict:
            return {"first": first, "last": last, "steps": steps}

    return Decay()


@contextlib.contextmanager
def _without_remapping() -> Iterator[None]:
    """Grappler's remapper off while training: on R(2+1)D's padded convolutions its gradient graph logs a
    "remapper failed" error line (harmless; the same step time without it on 2 cores)."""
    import tensorflow as tf

    before = tf.config.optimizer.get_experimental_options().get("remapping")
    tf.config.optimizer.set_experimental_options({"remapping": False})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"remapping": True if before is None else before})


@HEADS.register("finetune")
class FinetuneHead(Head):
    """A clip network (`network`, a clip backbone's) -> Dropout(dropout) -> Dense(1, sigmoid), trained end to end.

    Args:
        network: the clip backbone whose network is trained (set by the pipeline from the pair).
        network_weights: where its training starts: "imagenet" (an inflated 2D network's), "none" or a
            converted checkpoint file (set by the pipeline from --weights).
        input_size: the crops' side in pixels (set by the pipeline: the backbone's input size).
        clip_length, clip_stride: frames per clip and their spacing (the reference: 16 at stride 1).
        clips_per_epoch: training clips per epoch (frames drawn by sample weight).
        final_learning_rate: the learning rate reached after `decay_epochs` epochs (the reference decays 1e-3 to
            5e-5), kept after them.
        decay_epochs: the epochs of that decay. Not tied to `max_epochs`: a model refit for fewer epochs (the
            epoch the search chose) follows the same learning rates as the fold models it was chosen on.
        momentum: SGD momentum (the reference: 0.9).
        **common: batch_size (clips per step), learning_rate (the first step's), dropout, max_epochs,
            patience, seed (see `Head`). sequence_length and feature_norm do not apply: a clip's frames are
            `clip_length`, and the network scales its own pixels.
    """

    reads_crops = True

    def __init__(self, *, network: str | None = None, network_weights: str = "none", input_size: int | None = None,
                 clip_length: int = 16, clip_stride: int = 1, clips_per_epoch: int = 512,
                 final_learning_rate: float = 5e-5, decay_epochs: int = 10, momentum: float = 0.9,
                 batch_size: int = 8, learning_rate: float = 1e-3, dropout: float = 0.64, max_epochs: int = 10, patience: int = 3,
                 feature_norm: str = "none", **common: Any) -> None:
        super().__init__(batch_size=batch_size, learning_rate=learning_rate, dropout=dropout, max_epochs=max_epochs,
                         patience=patience, feature_norm=feature_norm, **common)
        self.network, self.network_weights, self.input_size = network, network_weights, input_size
        self.clip_length, self.clip_stride, self.clips_per_epoch = clip_length, clip_stride, clips_per_epoch
        self.final_learning_rate, self.decay_epochs, self.momentum = final_learning_rate, decay_epochs, momentum

    def _validate_architecture(self) -> None:
        check_int(self, "clip_length", minimum=1, hint="the reference uses 16")
        check_int(self, "clip_stride", minimum=1, hint="the reference uses 1")
        check_int(self, "clips_per_epoch", minimum=1)
        check_int(self, "decay_epochs", minimum=1)
        check_float(self, "final_learning_rate", low=0.0, low_inclusive=False)
        check_float(self, "momentum", low=0.0, high=1.0)
        if self.final_learning_rate > self.learning_rate:
            raise ConfigError(f"head {self.name}: final_learning_rate {self.final_learning_rate} is above "
                              f"learning_rate {self.learning_rate}; the schedule decays, so set it lower")
        if self.network is not None and self.network not in names_of_kind("clip"):
            raise ConfigError(f"head {self.name}: network {self.network} is not a clip backbone; pair the head "
                              f"with one of {', '.join(names_of_kind('clip'))}")
        if self.feature_norm != "none" or self.input_blocks is not None:
            raise ConfigError(f"head {self.name}: feature_norm and input_blocks do not apply (the network scales its "
                              "own pixels, of one clip backbone); leave them out of its search space")

    def _require_network(self) -> None:
        if self.network is None or self.input_size is None:
            raise ConfigError(f"head {self.name}: no clip network to train; pair it with a clip backbone "
                              f"({', '.join(names_of_kind('clip'))}), e.g. --backbones r2plus1d_18 --heads finetune")

    @property
    def offsets(self) -> list[int]:
        return centred_offsets(self.clip_length, self.clip_stride)

    # -- model --------------------------------------------------------------------------------

    def build_model(self, input_dim: int, pretrained: bool = False) -> Any:
        """(batch, clip_length, size, size, 3) pixels -> (batch, 1) probability. `pretrained`: the network
        starts from `network_weights` (a fit); else random (a saved head loads its own weights over it)."""
        self._require_network()
        keras = import_keras()
        policy = keras.mixed_precision.global_policy().name
        if mixed_precision_supported():
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            backbone = BACKBONES.build(self.network, input_size=self.input_size,
                                       weights=self.network_weights if pretrained else "none")
            network = backbone.network(self.clip_length, pretrained=pretrained)
            for layer in network._flatten_layers():
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False  # see the module docstring: statistics stay the pretrained ones
            clips = keras.Input((self.clip_length, self.input_size, self.input_size, 3), name="clip_pixels")
            x = keras.layers.Dropout(self.dropout, name="dropout")(network(clips))
            outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="clip_probability")(x)
            # Built under the policy: compile then scales the loss (float16 gradients would underflow).
            return keras.Model(clips, outputs, name=f"{self.network}_finetune")
        finally:
            keras.mixed_precision.set_global_policy(policy)

    def _frames(self, X: np.ndarray, what: str) -> np.ndarray:
        """A video's cached crops (frames, size * size * 3) as (frames, size, size, 3) pixels."""
        width = self.input_size * self.input_size * 3
        if X.ndim != 2 or X.shape[1] != width:
            raise DataError(f"{what}: inputs of shape {X.shape}, but head {self.name} reads {self.network}'s "
                            f"{self.input_size} px crops ((frames, {width})); pair it with the clip backbone itself")
        return X.reshape(len(X), self.input_size, self.input_size, 3)

    # -- training -----------------------------------------------------------------------------

    def fit(self, X: Sequence[np.ndarray], y: Sequence[np.ndarray], sample_weight: Sequence[np.ndarray],
            val: tuple[np.ndarray, np.ndarray] | None = None, on_epoch_end: Callable[[int, dict], None] | None = None,
            stop_early: bool = True, keep_val_history: bool = False) -> FinetuneHead:
        """Train the network and its classification layer on the training videos' clips; see `Head.fit`
        for the arguments and what is set (history_, best_epoch_, ...)."""
        self._validate()
        self._require_network()
        videos = [self._frames(np.asarray(Xv), f"training video {k + 1}") for k, Xv in enumerate(X)]
        labels = [np.asarray(yv, np.float32).reshape(-1) for yv in y]
        per_video = [np.asarray(w, np.float64).reshape(-1) for w in sample_weight]
        for k, (frames, yv, wv) in enumerate(zip(videos, labels, per_video, strict=True)):
            if not len(frames) == len(yv) == len(wv):
                raise DataError(f"training video {k + 1}: {len(frames)} frames of crops, {len(yv)} labels, {len(wv)} "
                                "sample weights; each needs one per frame (crop the video again)")
        weights = np.concatenate(per_video) if per_video else np.zeros(0)
        if not len(weights) or weights.sum() <= 0:
            raise DataError(f"head {self.name}: no training frame with a positive sample weight; train on videos "
                            "that show the behaviour")
        owner = np.concatenate([np.full(len(v), k) for k, v in enumerate(videos)])
        frame = np.concatenate([np.arange(len(v)) for v in videos])
        val_frames = val_labels = None
        if val is not None:
            val_frames = self._frames(np.asarray(val[0]), "validation video")
            val_labels = np.asarray(val[1]).reshape(-1)
            if len(val_labels) != len(val_frames) or not (val_labels == 1).any():
                raise DataError(f"validation video: {len(val_frames)} frames, {len(val_labels)} labels, "
                                f"{int((val_labels == 1).sum())} positive; it needs one label per frame and a positive "
                                "one: choose a validation video showing the behaviour, or pass val=None")

        keras = import_keras()
        keras.utils.set_random_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        model = self.build_model(0, pretrained=True)
        steps = math.ceil(self.clips_per_epoch / self.batch_size)
        schedule = _decay(keras, self.learning_rate, self.final_learning_rate, max(steps * self.decay_epochs - 1, 1))
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=self.momentum),
                      loss="binary_crossentropy")
        forward = self._compiled_forward(model)
        val_history: list[np.ndarray] = []

        def score() -> float:
            probabilities = self._predict_frames(forward, val_frames)
            if keep_val_history:
                val_history.append(probabilities)
            if not np.isfinite(probabilities).all():
                return math.nan
            return float(average_precision_score(val_labels, probabilities))

        tracker = _EpochTracker(keras.callbacks.Callback, score if val is not None else None,
                                self.patience if stop_early else None, on_epoch_end)
        probability = weights / weights.sum()
        started = time.perf_counter()
        with deferred_interrupts(), _without_remapping():
            for epoch in range(1, self.max_epochs + 1):
                tracker.epoch_started = time.perf_counter()
                picks = rng.choice(len(weights), size=self.clips_per_epoch, p=probability)
                losses = []
                for first in range(0, len(picks), self.batch_size):
                    batch = picks[first:first + self.batch_size]
                    clips = np.stack([gather_clips(videos[owner[i]], frame[i:i + 1], self.offsets)[0] for i in batch])
                    targets = np.array([labels[owner[i]][frame[i]] for i in batch], np.float32)[:, np.newaxis]
                    losses.append(float(model.train_on_batch(clips.astype(np.float32), targets)))
                    raise_if_interrupted()
                if tracker.end_epoch(model, epoch, float(np.mean(losses))):
                    break
        self._record_fit(model, tracker, val_history, val is not None, stop_early, time.perf_counter() - started)
        self._clip_forward = forward
        self.input_dim_ = int(self.input_size * self.input_size * 3)
        self.feature_mean_ = self.feature_std_ = None
        return self

    # -- prediction ---------------------------------------------------------------------------

    def _compiled_forward(self, model: Any) -> Callable[[np.ndarray], Any]:
        import tensorflow as tf

        shape = [None, self.clip_length, self.input_size, self.input_size, 3]

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)], autograph=False)  # no Python control flow
        def forward(clips: Any) -> Any:
            return model(clips, training=False)[:, 0]

        return forward

    def _predict_frames(self, forward: Callable[[np.ndarray], Any], frames: np.ndarray) -> np.ndarray:
        """Every frame's probability from its own clip, PREDICT_CLIPS clips per forward pass."""
        centres = np.arange(len(frames))
        parts = [np.asarray(forward(gather_clips(frames, centres[i:i + PREDICT_CLIPS], self.offsets)
                                    .astype(np.float32)))
                 for i in range(0, len(frames), PREDICT_CLIPS)]
        return np.clip(np.concatenate(parts), 0.0, 1.0).astype(np.float32) if parts else np.zeros(0, np.float32)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(frames, size * size * 3) crops of one video -> (frames,) float32 probabilities."""
        if not hasattr(self, "model_"):
            raise RuntimeError(f"head {self.name}: call fit before predict_proba")
        if getattr(self, "_clip_forward", None) is None:  # a loaded head
            self._clip_forward = self._compiled_forward(self.model_)
        return self._predict_frames(self._clip_forward, self._frames(np.asarray(X), "video"))
