"""A head's `feature_norm`: inputs scaled with the training videos' statistics, with each video's
own, or not at all; the statistics travel with a saved head."""

import json

import numpy as np
import pytest

from mbr_bench.core.errors import ConfigError, DataError
from mbr_bench.benchmark.features.sequences import sample_weights
from mbr_bench.benchmark.heads import HEADS, load_head
from mbr_bench.benchmark.heads.base import DEFAULT_FEATURE_NORM, FEATURE_NORMS
from mbr_bench.search_spaces.loader import SearchSpace

FAST = {"sequence_length": 20, "batch_size": 4, "learning_rate": 1e-2, "dropout": 0.0, "max_epochs": 2}
TINY = {"lstm": {"units": 8}, "tcn": {"nb_filters": 8, "dilations": (1, 2)}, "frame_mlp": {"units": 8}}


def build(name="frame_mlp", **params):
    return HEADS.build(name, **{**FAST, **TINY[name], **params})


def videos(n_videos, n_frames, seed, loc=0.0, spread=1.0):
    """Embeddings far from standard (feature k has mean loc + 10 k and std spread (k + 1)); frame t is
    positive when feature 0 is above its mean by one standard deviation."""
    rng = np.random.default_rng(seed)
    dim = 4
    X, y = [], []
    for _ in range(n_videos):
        z = rng.normal(size=(n_frames, dim))
        X.append((loc + 10.0 * np.arange(dim) + spread * (np.arange(dim) + 1) * z).astype(np.float32))
        labels = (z[:, 0] > 1.0).astype(np.int64)
        labels[:2] = (1, 0)  # both classes whatever the draw
        y.append(labels)
    return X, y


def test_the_choices_and_the_default():
    assert FEATURE_NORMS == ("none", "train", "per_video")
    assert DEFAULT_FEATURE_NORM in FEATURE_NORMS
    for name in HEADS.list():
        assert "feature_norm" in HEADS.get(name).param_names()
        if HEADS.get(name).reads_crops:  # a clip network scales its own pixels
            assert HEADS.build(name).get_params()["feature_norm"] == "none"
            continue
        assert HEADS.build(name).get_params()["feature_norm"] == DEFAULT_FEATURE_NORM


@pytest.mark.parametrize("value", ["standard", "Train", None, 1])
def test_a_bad_value_is_a_config_error_naming_the_parameter_value_and_choices(value):
    X, y = videos(1, 30, seed=0)
    head = build(feature_norm=value)
    with pytest.raises(ConfigError) as caught:
        head.fit(X, y, sample_weights(y))
    message = str(caught.value)
    assert "head frame_mlp: feature_norm must be one of 'none', 'train', 'per_video'" in message
    assert f"got {value!r}" in message


def test_train_stores_the_statistics_of_the_training_videos_only():
    X, y = videos(2, 60, seed=1, loc=50.0, spread=3.0)
    val_X, val_y = videos(1, 80, seed=2, loc=-400.0, spread=20.0)  # far off: would show in the statistics
    head = build(feature_norm="train").fit(X, y, sample_weights(y), val=(val_X[0], val_y[0]))
    pooled = np.concatenate(X).astype(np.float64)
    assert head.feature_mean_.dtype == head.feature_std_.dtype == np.float32
    np.testing.assert_allclose(head.feature_mean_, pooled.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(head.feature_std_, pooled.std(axis=0), rtol=1e-6)


def test_train_makes_a_head_blind_to_units_applied_to_every_video_alike():
    # Fitting on a * X + b (per feature) and predicting a * X_test + b gives what fitting on X and
    # predicting X_test gives: the model only ever sees the standardised features.
    X, y = videos(2, 60, seed=3)
    test_X = videos(1, 90, seed=4)[0][0]
    a, b = np.array([3.0, 0.5, 10.0, 2.0], np.float32), np.array([5.0, -100.0, 0.0, 1e3], np.float32)
    plain = build(feature_norm="train").fit(X, y, sample_weights(y))
    moved = build(feature_norm="train").fit([a * Xv + b for Xv in X], y, sample_weights(y))
    np.testing.assert_allclose(moved.predict_proba(a * test_X + b), plain.predict_proba(test_X), atol=1e-4)
    # ... which "none" is not.
    none = build(feature_norm="none").fit([a * Xv + b for Xv in X], y, sample_weights(y))
    assert np.abs(none.predict_proba(a * test_X + b) - plain.predict_proba(test_X)).max() > 1e-2


@pytest.mark.parametrize("name", ["frame_mlp", "lstm"])
def test_per_video_predictions_ignore_an_affine_change_of_the_video(name):
    X, y = videos(2, 60, seed=5)
    val_X, val_y = videos(1, 50, seed=6)
    head = build(name, feature_norm="per_video").fit(X, y, sample_weights(y), val=(val_X[0], val_y[0]))
    assert head.feature_mean_ is None and head.feature_std_ is None  # nothing fitted to keep
    test_X = videos(1, 73, seed=7)[0][0]
    proba = head.predict_proba(test_X)
    np.testing.assert_allclose(head.predict_proba(test_X * 3 + 5), proba, atol=1e-5)
    per_feature = test_X * np.array([0.1, 2.0, 7.0, 1.0], np.float32) - np.array([3.0, 0.0, 40.0, -2.0], np.float32)
    np.testing.assert_allclose(head.predict_proba(per_feature), proba, atol=1e-5)


def test_per_video_scales_each_training_video_on_its_own():
    # Each training video moved by its own affine change: the windows the model trains on are the
    # same, so is the fitted head.
    X, y = videos(2, 60, seed=8)
    test_X = videos(1, 50, seed=9)[0][0]
    plain = build(feature_norm="per_video").fit(X, y, sample_weights(y))
    moved = build(feature_norm="per_video").fit([X[0] * 4 - 7, X[1] * 0.5 + 30], y, sample_weights(y))
    np.testing.assert_allclose(moved.predict_proba(test_X), plain.predict_proba(test_X), atol=1e-4)


@pytest.mark.parametrize("feature_norm", FEATURE_NORMS)
def test_a_saved_head_predicts_as_the_fitted_one(feature_norm, tmp_path):
    X, y = videos(2, 60, seed=10, loc=20.0, spread=4.0)
    head = build(feature_norm=feature_norm).fit(X, y, sample_weights(y))
    head.save(tmp_path / "head")
    assert (tmp_path / "head" / "feature_norm.npz").is_file() == (feature_norm == "train")
    loaded = load_head(tmp_path / "head")
    assert loaded.feature_norm == feature_norm
    if feature_norm == "train":
        np.testing.assert_array_equal(loaded.feature_mean_, head.feature_mean_)
        np.testing.assert_array_equal(loaded.feature_std_, head.feature_std_)
    test_X = videos(1, 333, seed=11, loc=25.0, spread=5.0)[0][0]
    np.testing.assert_allclose(loaded.predict_proba(test_X), head.predict_proba(test_X), rtol=0, atol=1e-6)


def test_saving_a_head_without_statistics_removes_stale_ones(tmp_path):
    X, y = videos(2, 40, seed=12)
    build(feature_norm="train").fit(X, y, sample_weights(y)).save(tmp_path)
    build(feature_norm="none").fit(X, y, sample_weights(y)).save(tmp_path)
    assert not (tmp_path / "feature_norm.npz").exists()
    assert load_head(tmp_path).feature_norm == "none"


def test_missing_or_damaged_statistics_are_data_errors(tmp_path):
    X, y = videos(2, 40, seed=13)
    build(feature_norm="train").fit(X, y, sample_weights(y)).save(tmp_path)
    (tmp_path / "feature_norm.npz").write_bytes(b"not npz")
    with pytest.raises(DataError, match="feature_norm.npz: cannot read the training statistics"):
        load_head(tmp_path)
    np.savez(tmp_path / "feature_norm.npz", mean=np.zeros(3, np.float32), std=np.ones(3, np.float32))
    with pytest.raises(DataError, match=r"expected \(4,\) each"):
        load_head(tmp_path)
    (tmp_path / "feature_norm.npz").unlink()
    with pytest.raises(DataError, match="feature_norm.npz: missing"):
        load_head(tmp_path)


def test_a_head_saved_before_feature_norm_loads_unscaled(tmp_path):
    X, y = videos(2, 40, seed=14)
    head = build(feature_norm="none").fit(X, y, sample_weights(y))
    head.save(tmp_path)
    spec = json.loads((tmp_path / "head.json").read_text())
    del spec["params"]["feature_norm"]
    (tmp_path / "head.json").write_text(json.dumps(spec))
    loaded = load_head(tmp_path)
    assert loaded.feature_norm == "none"
    np.testing.assert_array_equal(loaded.predict_proba(X[0]), head.predict_proba(X[0]))


@pytest.mark.parametrize("name", ["lstm", "tcn", "frame_mlp"])
def test_feature_norm_is_searchable_from_a_search_space(name):
    import optuna

    space = SearchSpace.from_dict(
        name, {"feature_norm": {"choices": list(FEATURE_NORMS)}}, allowed=HEADS.get(name).param_names()
    )
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space.grid(), seed=0))
    drawn = []
    study.optimize(lambda trial: drawn.append(space.suggest(trial)["feature_norm"]) or 0.0, n_trials=3)
    assert sorted(drawn) == sorted(FEATURE_NORMS)
    for value in drawn:
        HEADS.build(name, feature_norm=value)._validate()
