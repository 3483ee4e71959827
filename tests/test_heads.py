"""The head contract, run against every registered head, plus what each head must be able to learn."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mbr_bench.core.errors import ConfigError, DataError
from mbr_bench.benchmark.features.sequences import sample_weights
from mbr_bench.benchmark.heads import HEADS, Head, base

# The heads that read embeddings (finetune reads a clip network's crops: tests/test_finetune.py).
EMBEDDING_HEADS = [name for name in HEADS.list() if not HEADS.get(name).reads_crops]

# Tiny architectures so every fit takes a second or two on two CPU cores; heads not listed use defaults.
TINY = {
    "lstm": {"units": 8},
    "tcn": {"nb_filters": 8, "dilations": (1, 2)},
    "frame_mlp": {"units": 8},
}
FAST = {"sequence_length": 20, "batch_size": 4, "learning_rate": 1e-2, "dropout": 0.0}


def build(name: str, **params) -> Head:
    return HEADS.build(name, **{**FAST, **TINY.get(name, {}), **params})


def videos(n_videos, n_frames, dim=4, lag=0, threshold=1.0, seed=0):
    """Gaussian embeddings; frame t is positive when feature 0 of frame t - lag exceeds `threshold`.

    threshold 1.0 gives about 16 % positive frames.
    """
    rng = np.random.default_rng(seed)
    X, y = [], []
    for _ in range(n_videos):
        embeddings = rng.normal(size=(n_frames, dim)).astype(np.float32)
        labels = np.zeros(n_frames, np.int64)
        labels[lag:] = embeddings[: n_frames - lag, 0] > threshold
        X.append(embeddings)
        y.append(labels)
    return X, y


def test_importing_heads_does_not_import_tensorflow():
    code = "import sys, mbr_bench.benchmark.heads; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("name", EMBEDDING_HEADS)
def test_head_contract(name):
    X, y = videos(3, 90, seed=1)
    val_X, val_y = videos(1, 70, seed=2)
    head = build(name, max_epochs=3, patience=2, feature_norm="train")
    assert set(head.get_params()) <= head.param_names()
    assert head.get_params()["seed"] == 0
    assert not hasattr(head, "model_")  # __init__ only stores parameters

    assert head.fit(X, y, sample_weights(y), val=(val_X[0], val_y[0])) is head
    assert 1 <= head.epochs_run_ <= 3
    assert 1 <= head.best_epoch_ <= head.epochs_run_
    assert len(head.history_) == head.epochs_run_
    assert [entry["epoch"] for entry in head.history_] == list(range(1, head.epochs_run_ + 1))
    assert 0.0 <= head.best_val_pr_auc_ <= 1.0
    assert head.history_[head.best_epoch_ - 1]["val_pr_auc"] == head.best_val_pr_auc_
    assert head.n_params_ > 0 and head.train_seconds_ > 0 and head.seconds_per_epoch_ > 0

    for n_frames in (7, 20, 53):  # shorter than, equal to and longer than sequence_length
        proba = head.predict_proba(val_X[0][:n_frames])
        assert proba.shape == (n_frames,) and proba.dtype == np.float32
        assert ((proba >= 0) & (proba <= 1)).all()
    # A frame's probability does not depend on how the video was cut behind it (scaling fixed by the training
    # videos here: per-video scaling depends on the whole video by design).
    np.testing.assert_allclose(head.predict_proba(val_X[0][:53])[:40], head.predict_proba(val_X[0][:40]), atol=1e-6)
    # Validation scoring and every prediction above reused one traced forward pass.
    assert head._forward.experimental_get_tracing_count() == 1

    twin = build(name, max_epochs=3, patience=2, feature_norm="train").fit(X, y, sample_weights(y), val=(val_X[0], val_y[0]))
    np.testing.assert_array_equal(twin.predict_proba(val_X[0]), head.predict_proba(val_X[0]))

    fresh = type(head)(**head.get_params())
    assert fresh.get_params() == head.get_params() and not hasattr(fresh, "model_")


def test_without_validation_trains_exactly_max_epochs_and_reports_each_epoch():
    X, y = videos(2, 60)
    calls = []
    head = build("frame_mlp", max_epochs=4).fit(X, y, sample_weights(y), on_epoch_end=lambda e, logs: calls.append((e, logs)))
    assert head.epochs_run_ == head.best_epoch_ == 4 and head.best_val_pr_auc_ is None
    assert [epoch for epoch, _ in calls] == [1, 2, 3, 4]
    assert all(set(logs) == {"loss", "val_pr_auc", "seconds"} and logs["val_pr_auc"] is None for _, logs in calls)
    assert calls[-1][1]["loss"] < calls[0][1]["loss"]


def test_an_exception_from_on_epoch_end_stops_training():
    class Pruned(Exception):
        pass

    def prune_at_two(epoch, logs):
        if epoch == 2:
            raise Pruned

    X, y = videos(2, 60)
    head = build("frame_mlp", max_epochs=10)
    with pytest.raises(Pruned):
        head.fit(X, y, sample_weights(y), on_epoch_end=prune_at_two)


def test_early_stopping_restores_the_best_epoch():
    # Training labels follow the embeddings but the validation labels are coin flips, so the
    # validation PR-AUC only wanders and stops improving soon.
    X, y = videos(3, 100, seed=3)
    val_X, _ = videos(1, 200, seed=4)
    val_y = (np.random.default_rng(5).random(200) < 0.2).astype(int)
    head = build("frame_mlp", max_epochs=40, patience=2).fit(X, y, sample_weights(y), val=(val_X[0], val_y))
    assert head.epochs_run_ == head.best_epoch_ + 2 < 40
    # The last epoch scored worse than the best, so matching the best proves the weights came back.
    assert head.history_[-1]["val_pr_auc"] < head.best_val_pr_auc_
    restored = average_precision_score(val_y, head.predict_proba(val_X[0]))
    assert restored == pytest.approx(head.best_val_pr_auc_, abs=1e-6)


@pytest.mark.parametrize("name", ["lstm", "tcn"])
def test_temporal_heads_learn_a_delayed_dependence(name):
    # Frame t is positive when feature 0 of frame t - 3 is high: only a model that sees earlier
    # frames can predict it.
    X, y = videos(4, 400, lag=3, seed=6)
    val_X, val_y = videos(1, 400, lag=3, seed=7)
    test_X, test_y = videos(1, 400, lag=3, seed=8)
    params = {"lstm": {"units": 32}, "tcn": {"nb_filters": 16}}[name]
    head = build(name, sequence_length=25, batch_size=2, max_epochs=20, patience=5, **params)
    head.fit(X, y, sample_weights(y), val=(val_X[0], val_y[0]))
    positive_rate = test_y[0].mean()
    assert 0.1 < positive_rate < 0.25
    assert average_precision_score(test_y[0], head.predict_proba(test_X[0])) > 0.8


def test_frame_mlp_cannot_learn_a_delayed_dependence():
    # Its output at frame t depends on frame t's embedding only, which is independent of frame
    # t - 3's, so it can do no better than the positive rate (about 0.16) on this task.
    X, y = videos(4, 400, lag=3, seed=6)
    val_X, val_y = videos(1, 400, lag=3, seed=7)
    test_X, test_y = videos(1, 400, lag=3, seed=8)
    head = build("frame_mlp", units=16, sequence_length=25, max_epochs=10, patience=5)
    head.fit(X, y, sample_weights(y), val=(val_X[0], val_y[0]))
    assert average_precision_score(test_y[0], head.predict_proba(test_X[0])) < 0.35


@pytest.mark.parametrize("name", ["lstm", "tcn", "frame_mlp"])
def test_every_head_learns_a_per_frame_dependence(name):
    X, y = videos(4, 200, seed=9)
    val_X, val_y = videos(1, 200, seed=10)
    test_X, test_y = videos(1, 300, seed=11)
    head = build(name, max_epochs=15, patience=4).fit(X, y, sample_weights(y), val=(val_X[0], val_y[0]))
    assert average_precision_score(test_y[0], head.predict_proba(test_X[0])) > 0.8


# -- parameters and data checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("tcn", {"norm": "group"}, r"head tcn: norm must be one of 'batch', 'layer', 'weight', 'none', got 'group'"),
        ("tcn", {"dilations": []}, r"head tcn: dilations must be a non-empty list of integers >= 1, got \[\]"),
        ("lstm", {"sequence_length": 1}, r"head lstm: sequence_length must be an integer >= 2, got 1"),
        ("lstm", {"n_layers": 0}, r"head lstm: n_layers must be an integer >= 1, got 0; the reference uses 1, 2 or 3"),
        ("frame_mlp", {"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ("frame_mlp", {"dropout": 1.0}, r"dropout must be a number in \[0.0, 1.0\), got 1.0"),
        ("frame_mlp", {"learning_rate": 0}, r"learning_rate must be a number in \(0.0, inf\), got 0"),
    ],
)
def test_invalid_parameters_are_config_errors_raised_by_fit(name, params, message):
    X, y = videos(1, 30)
    head = build(name, **params)  # storing is not validating
    with pytest.raises(ConfigError, match=message):
        head.fit(X, y, sample_weights(y))


def test_unknown_parameter_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"head lstm: unknown parameter\(s\) unit; known: .*units"):
        HEADS.build("lstm", unit=64)


def test_param_names_are_the_constructor_keywords():
    assert HEADS.get("tcn").param_names() == {
        "sequence_length", "batch_size", "learning_rate", "dropout", "max_epochs", "patience", "seed",
        "feature_norm", "input_blocks", "fusion_balance", "n_layers", "nb_filters", "kernel_size", "norm", "dilations", "tcn_dropout",
    }
    assert HEADS.get("lstm")().get_params()["units"] == 64  # reference defaults
    assert HEADS.get("tcn")().get_params()["nb_filters"] == 256


def test_validation_video_without_positives_is_a_data_error():
    X, y = videos(2, 40)
    with pytest.raises(DataError, match="validation video: no positive frame among 30"):
        build("frame_mlp").fit(X, y, sample_weights(y), val=(X[0][:30], np.zeros(30)))


def test_predict_checks_the_embedding_width():
    X, y = videos(2, 40)
    head = build("frame_mlp", max_epochs=1).fit(X, y, sample_weights(y))
    with pytest.raises(DataError, match=r"fitted on \(frames, 4\)"):
        head.predict_proba(np.zeros((10, 5), np.float32))


# -- architecture details -------------------------------------------------------------------------


def test_lstm_units_halve_layer_by_layer():
    head = HEADS.build("lstm", n_layers=3, units=64)
    assert head.layer_units() == [64, 32, 16]
    assert HEADS.build("lstm", n_layers=3, units=2).layer_units() == [2, 1, 1]
    model = head.build_model(5)
    assert [layer.units for layer in model.layers if layer.__class__.__name__ == "LSTM"] == [64, 32, 16]


@pytest.mark.parametrize("norm", ["batch", "layer", "weight", "none"])
def test_tcn_norms_build_and_train(norm):
    X, y = videos(2, 40)
    head = build("tcn", norm=norm, max_epochs=1).fit(X, y, sample_weights(y))
    assert head.epochs_run_ == 1 and np.isfinite(head.history_[0]["loss"])
    names = [variable.path for variable in head.model_.trainable_variables]
    assert any("batch_normalization" in n for n in names) == (norm == "batch")
    assert any("layer_normalization" in n for n in names) == (norm == "layer")
    assert any("kernel_g" in n for n in names) == (norm == "weight")


@pytest.mark.parametrize("n_layers", [1, 2])
def test_causal_tcn_sees_exactly_its_receptive_field(n_layers):
    import keras

    head = HEADS.build("tcn", n_layers=n_layers, nb_filters=16, kernel_size=2, dilations=(1, 2), norm="none")
    field = head.receptive_field()
    assert field == 1 + n_layers * 2 * 1 * 3
    keras.utils.set_random_seed(0)
    model = head.build_model(3)
    x = np.random.default_rng(0).normal(size=(1, 40, 3)).astype(np.float32)
    nudged = x.copy()
    nudged[0, 10] += 5.0
    changed = np.flatnonzero(np.asarray(model(nudged, training=False) - model(x, training=False))[0, :, 0])
    # Causal: nothing before frame 10 moves; the effect reaches exactly receptive_field - 1 frames on.
    assert changed.min() == 10 and changed.max() == 10 + field - 1


def test_weight_norm_conv_is_a_conv_with_kernel_g_v_over_norm_v():
    import keras

    from mbr_bench.benchmark.heads.tcn_weight_norm import WeightNormConv1D

    keras.utils.set_random_seed(0)
    layer = WeightNormConv1D(4, 3, dilation_rate=2, padding="causal")
    x = np.random.default_rng(0).normal(size=(2, 12, 5)).astype(np.float32)
    layer(x)
    assert sorted(v.name for v in layer.trainable_variables) == ["bias", "kernel_g", "kernel_v"]
    v = np.asarray(layer.kernel_v)
    np.testing.assert_allclose(np.asarray(layer.kernel), v, rtol=1e-6)  # g starts at ||v||

    rng = np.random.default_rng(1)
    layer.kernel_g.assign(rng.uniform(0.5, 2.0, 4).astype(np.float32))
    layer.bias.assign(rng.normal(size=4).astype(np.float32))
    g = np.asarray(layer.kernel_g)
    effective = g * v / np.sqrt((v**2).sum(axis=(0, 1)))
    np.testing.assert_allclose(np.asarray(layer.kernel), effective, rtol=1e-5)
    plain = keras.layers.Conv1D(4, 3, dilation_rate=2, padding="causal")
    plain.build(x.shape)
    plain.set_weights([effective, np.asarray(layer.bias)])
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(plain(x)), rtol=1e-5, atol=1e-5)

    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    gradients = tape.gradient(loss, [layer.kernel_v, layer.kernel_g])
    assert all(gradient is not None and np.abs(np.asarray(gradient)).sum() > 0 for gradient in gradients)


def test_weight_norm_tcn_saves_and_loads(tmp_path):
    import keras

    X, y = videos(2, 40)
    head = build("tcn", norm="weight", max_epochs=1).fit(X, y, sample_weights(y))
    path = tmp_path / "tcn.keras"
    head.model_.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        np.asarray(loaded(X[0][None, :20], training=False)), np.asarray(head.model_(X[0][None, :20], training=False)),
        rtol=1e-6, atol=1e-6,
    )
    assert type(loaded.get_layer("tcn_0")).__name__ == "WeightNormTCN"


@pytest.mark.parametrize("name", EMBEDDING_HEADS)
def test_saved_head_predicts_exactly_as_the_fitted_one(name, tmp_path):
    from mbr_bench.benchmark.heads import load_head

    X, y = videos(2, 60, seed=3)
    head = build(name, max_epochs=2).fit(X, y, sample_weights(y))
    head.save(tmp_path / "head")
    loaded = load_head(tmp_path / "head")
    as_lists = lambda params: {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}  # noqa: E731
    assert type(loaded) is type(head) and as_lists(loaded.get_params()) == as_lists(head.get_params())
    long_video = videos(1, 1000, seed=4)[0][0]  # several prediction chunks of windows
    np.testing.assert_array_equal(loaded.predict_proba(long_video), head.predict_proba(long_video))


@pytest.mark.parametrize("name", EMBEDDING_HEADS)
def test_head_saved_in_the_time_distributed_layout_still_loads(name, tmp_path):
    """Heads saved before per-frame Dense layers lost their TimeDistributed wrapper load and predict as saved."""
    from mbr_bench.benchmark.heads import load_head

    X, y = videos(2, 60, seed=3)
    head = build(name, max_epochs=1)
    head._time_distributed_layout = True
    head.fit(X, y, sample_weights(y))
    assert any(type(layer).__name__ == "TimeDistributed" for layer in head.model_.layers)
    head.save(tmp_path / "head")
    loaded = load_head(tmp_path / "head")
    assert not any(type(layer).__name__ == "TimeDistributed" for layer in loaded.model_.layers)
    video = videos(1, 300, seed=4)[0][0]
    np.testing.assert_allclose(loaded.predict_proba(video), head.predict_proba(video), rtol=1e-5, atol=1e-6)


def test_loading_a_damaged_head_is_a_data_error(tmp_path):
    from mbr_bench.benchmark.heads import load_head

    X, y = videos(2, 60, seed=3)
    build("frame_mlp", max_epochs=1).fit(X, y, sample_weights(y)).save(tmp_path)
    (tmp_path / "model.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="model.weights.h5"):
        load_head(tmp_path)
    with pytest.raises(DataError, match="no saved head"):
        load_head(tmp_path / "missing")


# -- prediction windows -----------------------------------------------------------------------------


class PastCounter(Head):
    """A stand-in "window model": its output at each position of a window is the number of frames of
    past the window holds there, divided by the window length (so it stays a probability)."""

    name = "past_counter"  # not registered: the registry lists real heads only

    def build_model(self, input_dim):
        keras = base.import_keras()
        length = float(self.sequence_length)
        inputs = keras.Input(shape=(None, input_dim))
        outputs = keras.layers.Lambda(
            lambda x: (keras.ops.cumsum(keras.ops.ones_like(x[..., :1]), axis=1) - 1.0) / length
        )(inputs)
        return keras.Model(inputs, outputs)


def past_counter(length: int) -> PastCounter:
    head = PastCounter(sequence_length=length)
    head.model_ = head.build_model(1)
    head._forward = base._compiled_forward(head.model_, length, 1)
    head.input_dim_, head.feature_mean_, head.feature_std_ = 1, None, None
    return head


@pytest.mark.parametrize("n_frames", [1, 7, 19, 20, 21, 30, 31, 45, 1000, 2603])
def test_predict_proba_gives_every_frame_at_least_half_a_window_of_past(n_frames, monkeypatch):
    length = 20
    head = past_counter(length)
    past = np.rint(head.predict_proba(np.zeros((n_frames, 1), np.float32)) * length).astype(int)
    frames = np.arange(n_frames)
    assert (past >= np.minimum(frames, length // 2)).all()
    np.testing.assert_array_equal(past[:length], frames[:length])  # the first window: all the past there is
    # Chunking the windows into forward passes changes nothing (2603 frames: 260 windows, 3 chunks of 128).
    monkeypatch.setattr(base, "PREDICT_CHUNK_WINDOWS", 1)
    one_at_a_time = np.rint(head.predict_proba(np.zeros((n_frames, 1), np.float32)) * length).astype(int)
    np.testing.assert_array_equal(one_at_a_time, past)


def test_validation_scoring_uses_the_prediction_windows():
    # keep_val_history holds what the per-epoch validation pass predicted: the same as predict_proba.
    X, y = videos(2, 60, seed=12)
    val_X, val_y = videos(1, 173, seed=13)
    head = build("lstm", max_epochs=1).fit(
        X, y, sample_weights(y), val=(val_X[0], val_y[0]), stop_early=False, keep_val_history=True,
    )
    assert head.val_history_.shape == (1, 173)
    np.testing.assert_array_equal(head.val_history_[0], head.predict_proba(val_X[0]))


@pytest.mark.parametrize("name", ["lstm", "tcn"])
def test_prediction_chunks_do_not_change_predictions(name, monkeypatch):
    X, y = videos(2, 60, seed=14)
    head = build(name, max_epochs=1).fit(X, y, sample_weights(y))
    long_video = videos(1, 2603, seed=15)[0][0]  # 259 half-overlapping windows of 20 frames: 3 chunks
    chunked = head.predict_proba(long_video)
    monkeypatch.setattr(base, "PREDICT_CHUNK_WINDOWS", 1)
    # Equal to float32 rounding: the batch size of a forward pass changes the order of the sums in
    # the matmuls (a last-bit difference); which window gives each frame is tested exactly above.
    np.testing.assert_allclose(head.predict_proba(long_video), chunked, rtol=0, atol=1e-6)


@pytest.mark.parametrize("feature_norm", ["none", "train", "per_video"])
def test_input_blocks_give_each_block_the_same_total_variance(feature_norm):
    # A fused input: 8 wide columns and 2 narrow ones, already z-scored (as a fused backbone writes them).
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 10)).astype(np.float32)
    head = build("frame_mlp", feature_norm=feature_norm, input_blocks=(8, 2))
    if feature_norm == "train":
        head.feature_mean_, head.feature_std_ = base.feature_stats([X])
    scaled = base.scale(X, head._scaling(X))
    variance = scaled.var(axis=0)
    assert variance[:8].sum() == pytest.approx(2.0, rel=0.05)  # sqrt(2/8) per wide column: 8 x 1/4
    assert variance[8:].sum() == pytest.approx(2.0, rel=0.05)  # the narrowest block keeps weight 1
    plain = base.scale(X, build("frame_mlp", feature_norm=feature_norm)._scaling(X)) if feature_norm != "train" else None
    if plain is not None:
        assert plain.var(axis=0)[:8].sum() == pytest.approx(8.0, rel=0.05)  # without blocks: 4x the narrow block


@pytest.mark.parametrize("balance, first, second", [(-1.0, 0.02, 2.0), (1.0, 2.0, 0.02), (0.0, 2.0, 2.0)])
def test_fusion_balance_weighs_the_first_block_against_the_others(balance, first, second):
    X = np.random.default_rng(1).normal(size=(5000, 10)).astype(np.float32)
    head = build("frame_mlp", feature_norm="per_video", input_blocks=(8, 2), fusion_balance=balance)
    variance = base.scale(X, head._scaling(X)).var(axis=0)
    # log10 of the weights' ratio is the balance; the heavier side keeps the block-scaled total of 2.
    assert variance[:8].sum() == pytest.approx(first, rel=0.05)
    assert variance[8:].sum() == pytest.approx(second, rel=0.05)


def test_input_blocks_must_add_up_to_the_input_width():
    X, y = videos(2, 60, dim=4)
    head = build("frame_mlp", input_blocks=(3, 3), max_epochs=1)
    with pytest.raises(ConfigError, match=r"input_blocks \[3, 3\] add up to 6 columns, but the inputs have 4"):
        head.fit(X, y, sample_weights(y))
    with pytest.raises(ConfigError, match="input_blocks must be positive column counts"):
        build("frame_mlp", input_blocks=(3, 0)).check_params()


def test_a_head_with_input_blocks_saves_and_predicts_the_same(tmp_path):
    X, y = videos(3, 80, dim=6)
    head = build("frame_mlp", input_blocks=(4, 2), max_epochs=2).fit(X[:2], y[:2], sample_weights(y[:2]))
    loaded = base.load_head(head.save(tmp_path / "head"))
    assert loaded.input_blocks == (4, 2)
    np.testing.assert_allclose(loaded.predict_proba(X[2]), head.predict_proba(X[2]), atol=1e-6)


@pytest.mark.parametrize("balance, side", [(-2.0, "second"), (2.0, "first")])
def test_at_the_range_end_a_fused_head_is_that_part_s_own_head(balance, side, tmp_path):
    X, y = videos(3, 120, dim=3, seed=4)
    other = [np.random.default_rng(k).normal(size=(120, 5)).astype(np.float32) for k in range(3)]
    fused = [np.hstack([o, x]) if side == "second" else np.hstack([x, o]) for x, o in zip(X, other)]
    blocks = (5, 3) if side == "second" else (3, 5)
    params = {"feature_norm": "per_video", "max_epochs": 3}
    alone = build("lstm", **params).fit(X[:2], y[:2], sample_weights(y[:2]))
    solo = build("lstm", input_blocks=blocks, fusion_balance=balance, **params).fit(fused[:2], y[:2],
                                                                                  sample_weights(y[:2]))
    assert solo.n_params_ == alone.n_params_  # the same model, initialised the same
    np.testing.assert_allclose(solo.predict_proba(fused[2]), alone.predict_proba(X[2]), atol=1e-5)
    loaded = base.load_head(solo.save(tmp_path / "solo"))
    np.testing.assert_allclose(loaded.predict_proba(fused[2]), alone.predict_proba(X[2]), atol=1e-5)
