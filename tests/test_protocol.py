"""The protocol: no video chooses anything about the model it scores.

The null test: with labels made independent of the features (each video's labels circularly shifted
by a random offset, which keeps the bout structure), nothing can be learnt, so an honest CV PR-AUC
sits at the positive rate. Under the old protocol each fold early-stopped on the video it was then
scored on, which takes the maximum of a noisy curve and sits above it.

The head here is a per-frame logistic regression trained by minibatch SGD, epoch by epoch, with the
fitting surface of the Head contract (`stop_early`, `keep_val_history`, `history_`,
`val_history_`): the protocol lives in `cross_validate`, not in the head, and a NumPy head lets
the test afford many seeds in seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mbr_bench.benchmark.cv import leave_one_video_out
from mbr_bench.benchmark.metrics import summarise
from mbr_bench.benchmark.search import PairData, common_epoch, cross_fitted_epochs, cross_validate

SEEDS = range(12)
BEHAVIOUR = "wall_rearing"


class SGDHead:
    """Per-frame logistic regression, minibatch SGD with a large step: noisy epoch-to-epoch scores."""

    def __init__(self, max_epochs: int = 12, patience: int = 3, learning_rate: float = 2.0, seed: int = 0):
        self.max_epochs, self.patience, self.learning_rate, self.seed = max_epochs, patience, learning_rate, seed

    def fit(self, X, y, sample_weight, val=None, on_epoch_end=None, stop_early=True, keep_val_history=False):
        X, y, w = np.concatenate(X), np.concatenate(y).astype(float), np.concatenate(sample_weight)
        self.mean_, self.std_ = X.mean(axis=0), X.std(axis=0) + 1e-6
        X = (X - self.mean_) / self.std_
        rng = np.random.default_rng(self.seed)
        self.coef_, self.bias_ = np.zeros(X.shape[1]), 0.0
        self.history_, history, best = [], [], (-math.inf, 0, None)
        for epoch in range(1, self.max_epochs + 1):
            order = rng.permutation(len(X))
            for batch in np.array_split(order, max(1, len(X) // 256)):
                p = 1 / (1 + np.exp(-(X[batch] @ self.coef_ + self.bias_)))
                gradient = w[batch] * (p - y[batch])
                self.coef_ -= self.learning_rate * X[batch].T @ gradient / len(batch)
                self.bias_ -= self.learning_rate * gradient.mean()
            score = None
            if val is not None:
                proba = self.predict_proba(val[0])
                score = float(average_precision_score(val[1], proba))
                if keep_val_history:
                    history.append(proba)
                if score > best[0]:
                    best = (score, epoch, (self.coef_.copy(), self.bias_))
            self.history_.append({"epoch": epoch, "loss": 0.0, "val_pr_auc": score})
            if val is not None and stop_early and epoch - best[1] >= self.patience:
                break
        self.epochs_run_ = len(self.history_)
        self.best_epoch_ = best[1] if (val is not None and stop_early) else self.epochs_run_
        if val is not None and stop_early:
            self.coef_, self.bias_ = best[2]
        self.val_history_ = np.stack(history) if history else None
        self.train_seconds_, self.n_params_ = 0.0, X.shape[1] + 1
        return self

    def predict_proba(self, X):
        z = ((np.asarray(X) - self.mean_) / self.std_) @ self.coef_ + self.bias_
        return (1 / (1 + np.exp(-z))).astype(np.float32)


@pytest.fixture(scope="module")
def open_field(tmp_path_factory):
    """5 training videos x 1,500 frames of the synthetic open field, as pose features."""
    from mbr_bench.benchmark.backbones import build_backbone
    from mbr_bench.benchmark.data.synthetic import generate
    from mbr_bench.benchmark.data.manifest import load_dataset
    from mbr_bench.benchmark.features.cache import EmbeddingCache
    from mbr_bench.benchmark.pair_inputs import behaviour_labels, embed_videos, read_video_labels

    root = tmp_path_factory.mktemp("null")
    dataset = load_dataset(generate(root / "data", n_videos=6, n_frames=1500, seed=5, n_test=1))
    train = [v.id for v in dataset.split("train")]
    embedded = embed_videos(dataset, build_backbone("pose", dataset), EmbeddingCache(root / "cache"), train,
                            progress=False)
    labels = behaviour_labels(read_video_labels(dataset, train, embedded.n_frames()), BEHAVIOUR)
    return embedded.arrays, labels, leave_one_video_out(dataset)


def shifted(labels: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Each video's labels rolled by a random offset of at least a tenth of the video: bouts kept, link to
    the features cut."""
    rng = np.random.default_rng(seed)
    return {v: np.roll(y, int(rng.integers(len(y) // 10, len(y) - len(y) // 10))) for v, y in labels.items()}


def scored_video_protocol(data: PairData, folds) -> list[float]:
    """The old protocol: each fold early-stops on the video it is then scored on."""
    scores = []
    for fold in folds:
        X_val, y_val = data.embeddings[fold.val_id], data.labels[fold.val_id]
        y_train = [data.labels[v] for v in fold.train_ids]
        from mbr_bench.benchmark.features.sequences import sample_weights

        head = SGDHead(seed=fold.index).fit([data.embeddings[v] for v in fold.train_ids], y_train,
                                            sample_weights(y_train), val=(X_val, y_val))
        scores.append(float(average_precision_score(y_val, head.predict_proba(X_val))))
    return scores


def test_null_labels_score_at_the_positive_rate_and_the_old_protocol_above_it(open_field):
    embeddings, labels, folds = open_field
    chance, honest, inner, old = [], [], [], []
    for seed in SEEDS:
        data = PairData(embeddings, shifted(labels, seed))
        chance.append(np.mean([data.labels[f.val_id].mean() for f in folds]))
        for protocol, sink in (("mean_curve", honest), ("inner", inner)):
            result = cross_validate(lambda: SGDHead(seed=seed), data, folds, protocol=protocol)
            sink.append(summarise([r.metrics for r in result.folds])["pr_auc_mean"])
        old.append(np.mean(scored_video_protocol(data, folds)))
    rate = float(np.mean(chance))
    print(f"\nnull over {len(SEEDS)} seeds: positive rate {rate:.4f}; CV PR-AUC mean_curve {np.mean(honest):.4f}, "
          f"inner {np.mean(inner):.4f}, scored-video early stopping (old) {np.mean(old):.4f}")
    assert abs(np.mean(honest) - rate) <= 0.02, (np.mean(honest), rate)
    assert abs(np.mean(inner) - rate) <= 0.02, (np.mean(inner), rate)
    # The old protocol's bias is what this protects against; it must show on the same null.
    assert np.mean(old) - rate > np.mean(honest) - rate


def test_each_fold_is_scored_where_the_other_folds_peak(open_field):
    embeddings, labels, folds = open_field
    data = PairData(embeddings, labels)
    result = cross_validate(lambda: SGDHead(seed=0), data, folds, protocol="mean_curve")
    # Recompute the curves: a fold's epoch is the argmax of the OTHER folds' mean curve, and its score
    # is its own curve's value there, not its own best; the refit length is the argmax of all folds.
    curves = []
    for fold in folds:
        from mbr_bench.benchmark.features.sequences import sample_weights

        y_train = [labels[v] for v in fold.train_ids]
        head = SGDHead(seed=0).fit([embeddings[v] for v in fold.train_ids], y_train, sample_weights(y_train),
                                   val=(embeddings[fold.val_id], labels[fold.val_id]), stop_early=False)
        curves.append(np.array([h["val_pr_auc"] for h in head.history_]))
    assert result.refit_epochs == common_epoch(curves) == int(np.argmax(np.mean(curves, axis=0))) + 1
    for k, (fold_result, curve) in enumerate(zip(result.folds, curves)):
        others = curves[:k] + curves[k + 1:]
        epoch = int(np.argmax(np.mean(others, axis=0))) + 1
        assert fold_result.metrics["epochs"] == epoch
        assert fold_result.metrics["pr_auc"] == pytest.approx(curve[epoch - 1], abs=1e-9)


def test_common_epoch_skips_undefined_scores_and_prefers_the_earliest_peak():
    curves = [np.array([0.2, 0.5, 0.5, math.nan]), np.array([0.3, 0.4, 0.4, 0.9])]
    assert common_epoch(curves) == 4  # epoch 4: only the second fold has a score, 0.9
    assert common_epoch([np.array([0.1, 0.3, 0.3])]) == 2
    assert cross_fitted_epochs(curves) == [4, 2]  # each fold gets the other's peak
    assert cross_fitted_epochs([np.array([0.9, 0.1, 0.2])]) == [3]  # alone: the full training length


def test_pruning_sees_the_running_score_after_each_fold(open_field):
    embeddings, labels, folds = open_field
    seen = []

    def on_fold(fold, n_done, fold_score, running):
        seen.append((n_done, fold_score, running))
        return n_done == 2  # prune after the second fold

    result = cross_validate(lambda: SGDHead(seed=0), PairData(embeddings, labels), folds, protocol="mean_curve",
                            on_fold=on_fold)
    assert [n for n, _, _ in seen] == [1, 2] and result.pruned and len(result.folds) == 2
    assert seen[0][1] == pytest.approx(seen[0][2])  # after one fold, the running score is that fold's
