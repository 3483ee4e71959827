"""The search: folds, sample weights, learning on synthetic data, MLflow structure, resume."""

from __future__ import annotations

import numpy as np
import pytest

from mbr_bench.benchmark.cv import leave_one_video_out
from mbr_bench.benchmark.search import PairData, cross_validate

BEHAVIOURS = ("grooming", "mid_rearing", "wall_rearing")


class SpyHead:
    """A per-frame logistic regression (one "epoch") that records what it was trained and validated on."""

    calls: list[dict] = []

    def fit(self, X, y, sample_weight, val=None, on_epoch_end=None, stop_early=True, keep_val_history=False):
        from sklearn.linear_model import LogisticRegression

        SpyHead.calls.append({"train": [id(x) for x in X], "val": id(val[0]), "weights": sample_weight, "y": y,
                              "stop_early": stop_early})
        self.model_ = LogisticRegression(max_iter=200).fit(
            np.concatenate(X), np.concatenate(y), sample_weight=np.concatenate(sample_weight)
        )
        self.best_epoch_ = self.epochs_run_ = 1
        self.train_seconds_, self.n_params_ = 0.01, X[0].shape[1] + 1
        val_proba = self.predict_proba(val[0])
        self.val_history_ = val_proba[None, :] if keep_val_history else None
        from sklearn.metrics import average_precision_score

        self.history_ = [{"epoch": 1, "loss": 0.0, "val_pr_auc": float(average_precision_score(val[1], val_proba))}]
        return self

    def predict_proba(self, X):
        return self.model_.predict_proba(X)[:, 1].astype(np.float32)


@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory):
    """4 videos x 600 frames (3 train, 1 test) and their pose embeddings."""
    from mbr_bench.benchmark.backbones import build_backbone
    from mbr_bench.benchmark.data.labels import read_labels
    from mbr_bench.benchmark.data.manifest import load_dataset
    from mbr_bench.benchmark.data.synthetic import generate
    from mbr_bench.benchmark.features.cache import EmbeddingCache
    from mbr_bench.benchmark.features.embed import embed_dataset

    root = tmp_path_factory.mktemp("synthetic")
    dataset = load_dataset(generate(root / "data", n_videos=4, n_frames=600, seed=3, n_test=1))
    results = embed_dataset(dataset, build_backbone("pose", dataset), EmbeddingCache(root / "cache"), progress=False)
    embeddings = {r.video_id: np.load(r.path) for r in results}
    labels = {v.id: read_labels(v.labels, BEHAVIOURS, n_frames=600) for v in dataset.videos}
    return dataset, embeddings, labels


def _pair(small_synthetic, behaviour, shuffle_seed=None):
    dataset, embeddings, labels = small_synthetic
    train = [v.id for v in dataset.split("train")]
    y = {v: labels[v][behaviour].to_numpy() for v in train}
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        y = {v: rng.permutation(values) for v, values in y.items()}
    return PairData({v: embeddings[v] for v in train}, y), leave_one_video_out(dataset)


def test_folds_never_share_a_video_and_never_touch_test_videos(small_synthetic):
    dataset, embeddings, _ = small_synthetic
    data, folds = _pair(small_synthetic, "wall_rearing")
    SpyHead.calls = []
    cross_validate(SpyHead, data, folds, protocol="mean_curve")
    test_ids = {id(embeddings[v.id]) for v in dataset.split("test")}
    assert len(SpyHead.calls) == len(folds) == 3
    validated = []
    for call, fold in zip(SpyHead.calls, folds):
        assert call["val"] not in call["train"]
        assert call["val"] == id(data.embeddings[fold.val_id])
        assert not call["stop_early"]  # the scored video never stops its own training
        assert not test_ids & set(call["train"] + [call["val"]])
        validated.append(fold.val_id)
    assert sorted(validated) == sorted(v.id for v in dataset.split("train"))


def test_the_inner_protocol_stops_on_a_training_video_and_never_on_the_scored_one(small_synthetic):
    dataset, embeddings, _ = small_synthetic
    data, folds = _pair(small_synthetic, "wall_rearing")
    SpyHead.calls = []
    result = cross_validate(SpyHead, data, folds, protocol="inner")
    for call, fold in zip(SpyHead.calls, folds):
        inner = next(v for v in fold.train_ids if id(data.embeddings[v]) == call["val"])
        assert call["stop_early"] and inner != fold.val_id
        assert call["train"] == [id(data.embeddings[v]) for v in fold.train_ids if v != inner]
    assert [r.fold.val_id for r in result.folds] == [f.val_id for f in folds]


def test_sample_weights_follow_the_formula_on_the_fold_training_videos(small_synthetic):
    data, folds = _pair(small_synthetic, "grooming")
    SpyHead.calls = []
    cross_validate(SpyHead, data, folds)
    assert SpyHead.calls
    for call in SpyHead.calls:
        y = np.concatenate(call["y"])
        w = np.concatenate(call["weights"])
        n, n_pos = len(y), int(y.sum())
        np.testing.assert_allclose(w[y == 1], n / (2 * n_pos), rtol=1e-6)
        np.testing.assert_allclose(w[y == 0], n / (2 * (n - n_pos)), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_a_head_learns_every_behaviour_and_shuffled_labels_do_not(small_synthetic, behaviour):
    """Bound: CV PR-AUC >= max(0.5, 3 x positive rate) with real labels.

    A scorer with no information has an expected average precision equal to the positive rate
    (about 0.12 here), so 0.5 is far above chance, while pose features separate the synthetic
    behaviours well (CV PR-AUC 0.8-1.0 when measured). With labels permuted frame by frame the same
    head must stay within 0.1 of the positive rate: there is nothing left to learn.
    """
    from mbr_bench.benchmark.heads import HEADS
    from mbr_bench.benchmark.metrics import summarise

    params = dict(sequence_length=100, batch_size=8, n_layers=1, units=32, learning_rate=3e-3,
                  max_epochs=15, patience=3, seed=0)
    data, folds = _pair(small_synthetic, behaviour)
    positive_rate = float(np.mean(np.concatenate(list(data.labels.values()))))
    real = cross_validate(lambda: HEADS.build("lstm", **params), data, folds)
    real_score = summarise([r.metrics for r in real.folds])["pr_auc_mean"]
    assert real_score >= max(0.5, 3 * positive_rate), (real_score, positive_rate)

    shuffled_data, _ = _pair(small_synthetic, behaviour, shuffle_seed=1)
    shuffled = cross_validate(lambda: HEADS.build("lstm", **params), shuffled_data, folds)
    shuffled_score = summarise([r.metrics for r in shuffled.folds])["pr_auc_mean"]
    assert abs(shuffled_score - positive_rate) < 0.1, (shuffled_score, positive_rate)


def _categorical_space():
    from mbr_bench.search_spaces.loader import SearchSpace

    return SearchSpace.from_dict("lstm", {"units": {"choices": [8, 16]}, "sequence_length": {"choices": [50, 100]},
                                          "max_epochs": 3})


def _finished(study, params, value=None, state=None):
    import optuna

    distributions = _categorical_space().distributions
    state = state or optuna.trial.TrialState.COMPLETE
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, state=state, value=value,
                                              user_attrs={"pr_auc_std": 0.05}))


def test_earlier_result_finds_only_complete_trials_with_the_same_params():
    import optuna

    from mbr_bench.benchmark.search import earlier_result

    study = optuna.create_study(direction="maximize")
    _finished(study, {"units": 8, "sequence_length": 50}, value=0.6)
    _finished(study, {"units": 16, "sequence_length": 50}, state=optuna.trial.TrialState.PRUNED)
    found = {}

    def objective(trial):
        _categorical_space().suggest(trial)
        earlier = earlier_result(trial)
        found[(trial.params["units"], trial.params["sequence_length"])] = None if earlier is None else earlier.number
        return 0.0

    for params in ({"units": 8, "sequence_length": 50}, {"units": 16, "sequence_length": 50},
                   {"units": 8, "sequence_length": 100}):
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=3)
    # Same params as the complete trial 0: found. A pruned trial's params, or other params: trained.
    assert found == {(8, 50): 0, (16, 50): None, (8, 100): None}


def test_a_repeated_configuration_reuses_its_score_without_training_or_tracking():
    import optuna

    from mbr_bench.benchmark.progress import SearchProgress
    from mbr_bench.benchmark.search import make_objective

    class NoTracking:
        def trial_run(self, *args, **kwargs):
            raise AssertionError("a repeated configuration must not open a tracked run")

    study = optuna.create_study(direction="maximize")
    _finished(study, {"units": 16, "sequence_length": 100}, value=0.72)
    study.enqueue_trial({"units": 16, "sequence_length": 100})
    # No data and no folds: any training attempt would fail the trial.
    objective = make_objective("wall_rearing", "lstm", _categorical_space(), PairData({}, {}), [], NoTracking(), 0,
                               SearchProgress(enabled=False))
    study.optimize(objective, n_trials=1)
    repeat = study.trials[-1]
    assert repeat.state == optuna.trial.TrialState.COMPLETE
    assert repeat.value == pytest.approx(0.72)
    assert repeat.user_attrs["repeat_of"] == 0
    assert repeat.user_attrs["train_seconds"] == 0.0


def test_a_fused_study_starts_from_each_part_s_best_trial_turned_toward_it(tmp_path):
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from mbr_bench.benchmark.search import warm_start_from_parts
    from mbr_bench.search_spaces.loader import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db")
    units = CategoricalDistribution([8, 16])
    space = SearchSpace("lstm", tmp_path, {"units": units}, {}, {"units": [8, 16]}).for_fused()
    for part, scores in (("mobilenet_v2", {8: 0.6, 16: 0.7}), ("track", {8: 0.9, 16: 0.8})):
        study = optuna.create_study(study_name=f"grooming/{part}+lstm", storage=storage, direction="maximize")
        for value, score in scores.items():
            study.add_trial(optuna.trial.create_trial(params={"units": value}, distributions={"units": units},
                                                      value=score))
    fused = optuna.create_study(study_name="grooming/mobilenet_v2+track+lstm", storage=storage)
    assert warm_start_from_parts(fused, storage, "grooming", ["mobilenet_v2", "track"], "lstm", space) == [
        "track", "mobilenet_v2"]  # the best part first
    waiting = [t.system_attrs["fixed_params"] for t in fused.get_trials(states=(optuna.trial.TrialState.WAITING,))]
    # Each part's best units, the balance at the end of the range that favours that part.
    assert waiting == [{"units": 8, "fusion_balance": -2.0}, {"units": 16, "fusion_balance": 2.0}]
    assert space.distributions["fusion_balance"] == FloatDistribution(-2.0, 2.0)
    # Once the study has trials it is left alone; a budget caps what is enqueued; parts never searched are skipped.
    assert warm_start_from_parts(fused, storage, "grooming", ["mobilenet_v2", "track"], "lstm", space) == []
    other = optuna.create_study(study_name="grooming/pose+track+lstm", storage=storage)
    assert warm_start_from_parts(other, storage, "grooming", ["pose", "track"], "lstm", space, budget=1) == ["track"]
    capped = optuna.create_study(study_name="grooming/mobilenet_v2+track+lstm-capped", storage=storage)
    assert warm_start_from_parts(capped, storage, "grooming", ["mobilenet_v2", "track"], "lstm", space,
                                 budget=1) == ["track"]
