"""Target 4: one epoch through `Head.fit` costs no more than 1.10x plain `keras.Model.fit`.

The same model (`head.build_model`), the same windows and weights (`training_windows`,
`sample_weights`), the same batch size, shuffle and optimiser; 5 epochs each, the first two
(tracing, warm-up) left out, the median of the rest; the head's and the plain run interleaved over rounds, best round of each.
Before every fit, garbage is collected and Keras' global state cleared, so that neither path pays
for the models the other left behind.
"""

from __future__ import annotations

import gc
import statistics
import time

import numpy as np
import pytest

from mbr_bench.benchmark.features.sequences import sample_weights, training_windows
from mbr_bench.benchmark.heads import HEADS

HEAD_TARGET = 1.10
EPOCHS = 5
WARM_EPOCHS = 2  # epochs 1-2 hold tracing and warm-up in both paths; epochs 3-5 are compared
ROUNDS = {"lstm": 4, "tcn": 2}  # an LSTM epoch is ~1 s and noisy on a shared machine; TCN tracing alone costs ~25 s
N_VIDEOS, N_FRAMES, DIM = 4, 1500, 1280  # mobilenet_v2-sized embeddings; 20 windows of 300 frames
PARAMS = {"sequence_length": 300, "batch_size": 8, "dropout": 0.5, "learning_rate": 1e-3, "seed": 0}


def _data():
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(N_FRAMES, DIM)).astype(np.float32) for _ in range(N_VIDEOS)]
    y = []
    for _ in range(N_VIDEOS):
        labels = np.zeros(N_FRAMES, np.int64)
        for start in rng.integers(0, N_FRAMES - 40, size=8):
            labels[start : start + 30] = 1
        y.append(labels)
    return X, y, sample_weights(y)


def _fresh_state() -> None:
    import keras

    gc.collect()
    keras.backend.clear_session()


def _plain_epoch_seconds(head, X, y, w) -> list[float]:
    """Plain Keras: the head's model, compiled the same way, fitted on the same numpy windows."""
    import keras

    Xw, yw, ww = training_windows(X, y, w, head.sequence_length)
    keras.utils.set_random_seed(head.seed)
    model = head.build_model(Xw.shape[2])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=head.learning_rate), loss="binary_crossentropy")
    seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    model.fit(Xw, yw, sample_weight=ww, batch_size=head.batch_size, epochs=EPOCHS, shuffle=True, verbose=0,
              callbacks=[Timer()])
    return seconds


@pytest.mark.parametrize("name", ["lstm", "tcn"])
def test_head_epoch_vs_plain_keras_fit(benchmark, name):
    X, y, w = _data()
    plain_runs: list[list[float]] = []
    head_runs: list[list[float]] = []

    def setup():
        head = HEADS.build(name, max_epochs=EPOCHS, **PARAMS)
        _fresh_state()
        plain_runs.append(_plain_epoch_seconds(head, X, y, w))  # interleaved: plain right before each head fit
        _fresh_state()
        return (head,), {}

    def fit(head):
        head.fit(X, y, w, val=None)
        head_runs.append([epoch["seconds"] for epoch in head.history_])
        return head

    head = benchmark.pedantic(fit, setup=setup, rounds=ROUNDS[name], iterations=1)
    assert head.epochs_run_ == EPOCHS

    def steady(runs):  # per run: median of the epochs after the warm-up ones
        return [statistics.median(run[WARM_EPOCHS:]) for run in runs]

    head_epoch, plain_epoch = min(steady(head_runs)), min(steady(plain_runs))
    ratio = head_epoch / plain_epoch
    benchmark.extra_info.update(
        target=f"4. Head.fit epoch / plain keras fit epoch ({name})",
        ratio=round(ratio, 4),
        comparison="<=",
        target_value=HEAD_TARGET,
        note=(f"{N_VIDEOS} videos x {N_FRAMES} frames x {DIM} features, windows of 300, batch 8, "
              f"{EPOCHS} epochs (median of epochs {WARM_EPOCHS + 1}-{EPOCHS}), best of {ROUNDS[name]} interleaved round(s): head {head_epoch:.3f} s "
              f"vs plain {plain_epoch:.3f} s per epoch; first epochs (tracing) head "
              f"{', '.join(f'{r[0]:.2f}' for r in head_runs)} s, plain {', '.join(f'{r[0]:.2f}' for r in plain_runs)} s"),
        head_epoch_seconds=head_runs,
        plain_epoch_seconds=plain_runs,
        head_steady_seconds=round(head_epoch, 4),
        plain_steady_seconds=round(plain_epoch, 4),
    )
