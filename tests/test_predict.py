"""Predicting new videos with saved model bundles: real synthetic videos, the pose backbone, tiny LSTM heads."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mbr_bench.benchmark.backbones import build_backbone
from mbr_bench.benchmark.backbones.pose import PoseFeatures
from mbr_bench.benchmark.bundle import BUNDLE_FILE, ModelBundle, load_bundle
from mbr_bench.benchmark.data.labels import read_labels
from mbr_bench.benchmark.data.manifest import VideoEntry, load_dataset
from mbr_bench.benchmark.data.pose import read_pose
from mbr_bench.benchmark.data.synthetic import generate
from mbr_bench.benchmark.data.video import probe_video
from mbr_bench.core.errors import ConfigError, DataError
from mbr_bench.benchmark.features.cache import EmbeddingCache
from mbr_bench.benchmark.features.embed import embed_dataset, load_embeddings
from mbr_bench.benchmark.features.sequences import sample_weights
from mbr_bench.benchmark.heads import HEADS
from mbr_bench.benchmark.postprocess import PostProcess
from mbr_bench.benchmark.predict import (
    PredictOptions,
    exclusive_labels,
    find_pose,
    find_videos,
    predict_videos,
    write_predictions_csv,
)

BEHAVIOURS = ("grooming", "wall_rearing")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-video synthetic dataset and, per behaviour, a fitted head saved as a bundle and loaded back."""
    root = tmp_path_factory.mktemp("predict")
    dataset = load_dataset(generate(root / "data", n_videos=3, n_frames=300, seed=1, n_test=1))
    backbone = build_backbone("pose", dataset)
    train = dataset.split("train")
    results = embed_dataset(dataset, backbone, EmbeddingCache(root / "train-cache"),
                            video_ids=[v.id for v in train], progress=False)
    X = [np.load(r.path, mmap_mode="r") for r in results]
    heads, saved, loaded = {}, {}, {}
    for behaviour in BEHAVIOURS:
        y = [read_labels(entry.labels, dataset.behaviours, n_frames=len(x), fps=entry.fps)[behaviour].to_numpy()
             for entry, x in zip(train, X, strict=True)]
        head = HEADS.build("lstm", units=8, sequence_length=20, batch_size=4, max_epochs=3, learning_rate=1e-2,
                           dropout=0.0)
        head.fit(X, y, sample_weights(y))
        bundle = ModelBundle(
            behaviour=behaviour, backbone="pose", weights="none", backbone_config=backbone.describe(),
            crop=dataset.crop, heading=dataset.heading, individual=dataset.individual, heads=[head],
            threshold=0.5, threshold_rule="max_f1", postprocess=PostProcess(closing=3), info={"test": True},
        )
        heads[behaviour], saved[behaviour] = head, bundle.save(root / "models" / behaviour)
        loaded[behaviour] = load_bundle(saved[behaviour])
    test = dataset.split("test")[0]
    return SimpleNamespace(
        dataset=dataset, heads=heads, folders=saved, bundles=loaded, test=test,
        test_X=backbone.embed_pose(read_pose(test.pose), test.fps), videos=test.video.parent, poses=test.pose.parent,
    )


def _predict(trained, inputs, out, cache, bundles=("grooming",), **options) -> list:
    chosen = [trained.bundles[b] if isinstance(b, str) else b for b in bundles]
    return predict_videos(PredictOptions(bundles=chosen, inputs=[Path(p) for p in inputs], out_dir=Path(out),
                                         cache=cache, progress=False, **options))


def _cached_embeddings(bundle, video: Path, pose: Path, cache: EmbeddingCache) -> np.ndarray:
    """The embeddings predict stored for `video`, read back the way training reads them."""
    entry = VideoEntry(id=video.stem, video=video, pose=pose, fps=probe_video(video).fps)
    dataset = bundle.dataset_for([entry], where=video.parent)
    return load_embeddings(dataset, entry, bundle.build_backbone(dataset), cache, crop=bundle.crop)


def _cache_files(cache: EmbeddingCache) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in cache.root.rglob("*") if p.is_file()}


def _refuse_pose_embedding(monkeypatch) -> None:
    """From here on, fail the test if a pose embedding is computed (it must come from the cache)."""
    def refuse(self, pose, fps):
        raise AssertionError(f"{pose.path} was embedded again instead of read from the cache")

    monkeypatch.setattr(PoseFeatures, "embed_pose", refuse)


# --------------------------------------------------------------------------------------------
# the bundle


def test_bundle_round_trip_keeps_the_decision_and_the_head(trained):
    for behaviour in BEHAVIOURS:
        loaded = trained.bundles[behaviour]
        assert loaded.behaviour == behaviour and loaded.postprocess == PostProcess(closing=3)
        assert loaded.heading == trained.dataset.heading and loaded.crop == trained.dataset.crop
        assert loaded.needs_pose()
        np.testing.assert_allclose(loaded.predict_proba(trained.test_X),
                                   trained.heads[behaviour].predict_proba(trained.test_X), atol=1e-6)
    assert trained.bundles["grooming"].embedding_key() == trained.bundles["wall_rearing"].embedding_key()


def test_a_bundle_applies_its_post_processing_in_seconds_at_the_video_rate(trained, tmp_path):
    """Trained at 10 fps (the tiny set's rate), predicting a 30 fps recording of the same thing."""
    bundle = replace(trained.bundles["grooming"], postprocess=PostProcess(closing=5, opening=3, min_bout=4),
                                 postprocess_fps=10.0)
    loaded = load_bundle(bundle.save(tmp_path / "model"))
    assert loaded.postprocess_fps == 10.0 and loaded.postprocess == bundle.postprocess
    proba = np.clip(trained.heads["grooming"].predict_proba(trained.test_X)
                    + np.random.default_rng(0).normal(0, 0.2, len(trained.test_X)), 0, 1)
    raw_10, post_10 = loaded.decide(proba, 10.0)
    raw_30, post_30 = loaded.decide(np.repeat(proba, 3), 30.0)
    np.testing.assert_array_equal(raw_30, np.repeat(raw_10, 3))
    np.testing.assert_array_equal(post_30, np.repeat(post_10, 3))


def test_load_bundle_without_bundle_json_is_a_data_error(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(DataError, match="no bundle.json"):
        load_bundle(tmp_path / "model")


def test_load_bundle_of_another_format_is_a_data_error(trained, tmp_path):
    folder = shutil.copytree(trained.folders["grooming"], tmp_path / "model")
    spec = json.loads((folder / BUNDLE_FILE).read_text())
    (folder / BUNDLE_FILE).write_text(json.dumps({**spec, "format": "something-else"}))
    with pytest.raises(DataError, match="not a readable mbr-bench model"):
        load_bundle(folder)


def _edited_bundle(trained, tmp_path, change) -> Path:
    folder = shutil.copytree(trained.folders["grooming"], tmp_path / "model")
    spec = json.loads((folder / BUNDLE_FILE).read_text())
    change(spec)
    (folder / BUNDLE_FILE).write_text(json.dumps(spec))
    return folder


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        pytest.param(lambda s: s["decision"].update(threshold=float("nan")), ["threshold must be a number in [0, 1]"],
                     id="nan-threshold"),
        pytest.param(lambda s: s["decision"].update(threshold=1.5), ["threshold must be a number in [0, 1]", "1.5"],
                     id="threshold-above-1"),
        pytest.param(lambda s: s["decision"].update(threshold="0.5"), ["threshold must be a number"],
                     id="threshold-as-text"),
        pytest.param(lambda s: s["heads"][0].update(name="tcn"), ["names head 'tcn'", "holds a 'lstm' head"],
                     id="head-name-mismatch"),
    ],
)
def test_a_damaged_bundle_field_is_refused_on_load(trained, tmp_path, change, fragments):
    folder = _edited_bundle(trained, tmp_path, change)
    with pytest.raises(DataError) as info:
        load_bundle(folder)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(folder / BUNDLE_FILE))
    for fragment in fragments:
        assert fragment in message, message


# --------------------------------------------------------------------------------------------
# one video, one model


def test_csv_has_one_row_per_frame_and_the_heads_probabilities(trained, tmp_path):
    bundle, video = trained.bundles["grooming"], trained.test.video
    cache = EmbeddingCache(tmp_path / "cache")
    [outcome] = _predict(trained, [video], tmp_path / "out", cache, pose=trained.poses)

    info = probe_video(video)
    assert outcome.csv == tmp_path / "out" / f"{video.stem}.csv"
    assert (outcome.video, outcome.fps) == (video, info.fps)
    assert outcome.frames == outcome.computed == info.n_frames
    table = pd.read_csv(outcome.csv)
    assert list(table.columns) == ["frame", "time_s", "grooming_probability", "grooming_label"]
    assert len(table) == info.n_frames == 300
    np.testing.assert_array_equal(table["frame"], np.arange(300))
    np.testing.assert_array_equal(table["time_s"], np.round(np.arange(300) / info.fps, 6))

    proba = bundle.predict_proba(_cached_embeddings(bundle, video, trained.test.pose, cache))
    assert proba.std() > 0  # a real prediction, not a constant
    np.testing.assert_array_equal(table["grooming_probability"].to_numpy().astype(np.float32), proba)
    labels = bundle.decide(proba)[1]
    np.testing.assert_array_equal(table["grooming_label"], labels)
    assert outcome.positives == {"grooming": int(labels.sum())}
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != outcome.csv.name]  # no temporary left


def test_second_run_reads_the_embeddings_from_the_cache(trained, tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path / "cache")
    [first] = _predict(trained, [trained.test.video], tmp_path / "out", cache, pose=trained.poses)
    written, files = first.csv.read_bytes(), _cache_files(cache)
    assert first.computed == 300 and files

    _refuse_pose_embedding(monkeypatch)
    [second] = _predict(trained, [trained.test.video], tmp_path / "out", cache, pose=trained.poses)
    assert second.computed == 0
    assert second.csv.read_bytes() == written
    assert _cache_files(cache) == files  # nothing rewritten


def test_a_video_embedded_for_training_is_read_from_the_cache(trained, tmp_path, monkeypatch):
    # What refit does to the test video; predict must then find it, though it knows nothing of dataset.yaml.
    cache = EmbeddingCache(tmp_path / "cache")
    embed_dataset(trained.dataset, build_backbone("pose", trained.dataset), cache, video_ids=[trained.test.id],
                  progress=False)
    files = _cache_files(cache)
    _refuse_pose_embedding(monkeypatch)
    [outcome] = _predict(trained, [trained.test.video], tmp_path / "out", cache, pose=trained.poses)
    assert outcome.computed == 0 and _cache_files(cache) == files


# --------------------------------------------------------------------------------------------
# several models


def test_two_behaviours_share_one_embedding_and_one_csv(trained, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    [outcome] = _predict(trained, [trained.test.video], tmp_path / "out", cache, bundles=BEHAVIOURS,
                         pose=trained.poses)
    table = pd.read_csv(outcome.csv)
    assert list(table.columns) == ["frame", "time_s", "grooming_probability", "grooming_label",
                                   "wall_rearing_probability", "wall_rearing_label"]
    assert len(list(cache.root.rglob("*.npy"))) == 1  # one embedding for both models
    X = _cached_embeddings(trained.bundles["grooming"], trained.test.video, trained.test.pose, cache)
    for behaviour in BEHAVIOURS:
        bundle = trained.bundles[behaviour]
        proba = bundle.predict_proba(X)
        np.testing.assert_array_equal(table[f"{behaviour}_probability"].to_numpy().astype(np.float32), proba)
        np.testing.assert_array_equal(table[f"{behaviour}_label"], bundle.decide(proba)[1])
        assert outcome.positives[behaviour] == int(table[f"{behaviour}_label"].sum())


def test_exclusive_keeps_the_most_probable_labelled_behaviour(trained, tmp_path):
    # Threshold 0 labels every frame grooming, so wherever wall rearing is labelled the two overlap.
    everywhere = replace(trained.bundles["grooming"], threshold=0.0)
    bundles = (everywhere, "wall_rearing")
    cache = EmbeddingCache(tmp_path / "cache")
    [both] = _predict(trained, [trained.test.video], tmp_path / "both", cache, bundles=bundles, pose=trained.poses)
    [one] = _predict(trained, [trained.test.video], tmp_path / "one", cache, bundles=bundles, pose=trained.poses,
                     exclusive=True)
    overlapping, exclusive = pd.read_csv(both.csv), pd.read_csv(one.csv)
    assert (overlapping["grooming_label"] == 1).all() and (overlapping["wall_rearing_label"] == 1).any()
    assert "behaviour" not in overlapping.columns and list(exclusive.columns)[-1] == "behaviour"

    labels = exclusive[["grooming_label", "wall_rearing_label"]].to_numpy()
    assert labels.sum(axis=1).max() == 1
    named = np.array(["grooming", "wall_rearing"])[labels.argmax(axis=1)]
    np.testing.assert_array_equal(exclusive["behaviour"], np.where(labels.any(axis=1), named, "none"))
    wall = overlapping["wall_rearing_label"].to_numpy() == 1
    wins = wall & (overlapping["wall_rearing_probability"] > overlapping["grooming_probability"]).to_numpy()
    np.testing.assert_array_equal(exclusive["wall_rearing_label"], wins.astype(int))
    for column in ("grooming_probability", "wall_rearing_probability"):
        np.testing.assert_array_equal(exclusive[column], overlapping[column])
    assert one.positives == {"grooming": int((~wins).sum()), "wall_rearing": int(wins.sum())}


def test_exclusive_labels_breaks_ties_by_order_and_marks_empty_frames():
    probabilities = np.array([[0.9, 0.2, 0.5, 0.1], [0.3, 0.8, 0.5, 0.9]])
    labels = np.array([[1, 1, 1, 0], [1, 0, 1, 0]])
    kept, winner = exclusive_labels(probabilities, labels)
    np.testing.assert_array_equal(winner, [0, 0, 0, -1])  # frame 1: behaviour 1 is more probable but unlabelled
    np.testing.assert_array_equal(kept, [[1, 1, 1, 0], [0, 0, 0, 0]])
    assert kept.dtype == np.int8


def test_duplicate_behaviours_are_a_config_error(trained, tmp_path):
    with pytest.raises(ConfigError, match="grooming"):
        _predict(trained, [trained.test.video], tmp_path / "out", EmbeddingCache(tmp_path / "cache"),
                 bundles=("grooming", "grooming"), pose=trained.poses)


# --------------------------------------------------------------------------------------------
# inputs


def test_a_folder_predicts_every_video_in_it(trained, tmp_path):
    (trained.videos / "notes.txt").write_text("not a video")
    try:
        outcomes = _predict(trained, [trained.videos], tmp_path / "out", EmbeddingCache(tmp_path / "cache"),
                            pose=trained.poses)
    finally:
        (trained.videos / "notes.txt").unlink()
    assert [o.video.name for o in outcomes] == ["ofs01.mp4", "ofs02.mp4", "ofs03.mp4"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ofs01.csv", "ofs02.csv", "ofs03.csv"]
    assert all(len(pd.read_csv(o.csv)) == o.frames == 300 for o in outcomes)


def test_pose_beside_the_video_in_deeplabcut_naming(trained, tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(trained.test.video, new / "ofs03.mp4")
    shutil.copy(trained.test.pose, new / "ofs03DLC_resnet50_openfieldJan1shuffle1_100000.csv")
    cache = EmbeddingCache(tmp_path / "cache")
    [beside] = _predict(trained, [new], tmp_path / "beside", cache)
    [given] = _predict(trained, [trained.test.video], tmp_path / "given", cache, pose=trained.test.pose)
    assert beside.csv.read_bytes() == given.csv.read_bytes()


def test_a_missing_pose_fails_before_anything_is_embedded_or_written(trained, tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    for video_id in ("ofs01", "ofs02"):  # ofs01 has its pose beside it, ofs02 has none
        shutil.copy(trained.videos / f"{video_id}.mp4", new)
    shutil.copy(trained.poses / "ofs01.csv", new)
    cache = EmbeddingCache(tmp_path / "cache")
    with pytest.raises(DataError, match=r"ofs02\.mp4: no pose file found .*--pose") as error:
        _predict(trained, [new], tmp_path / "out", cache)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists() and not cache.root.exists()


def test_an_out_folder_that_cannot_be_written_fails_before_anything_is_embedded(trained, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be\n")
    cache = EmbeddingCache(tmp_path / "cache")
    with pytest.raises(DataError, match=r"blocker/out: cannot write predictions there .*writable --out") as error:
        _predict(trained, [trained.test.video], blocker / "out", cache, pose=trained.test.pose)
    assert "\n" not in str(error.value)
    assert not cache.root.exists()


def test_a_pose_file_with_other_body_parts_fails_before_anything_is_embedded(trained, tmp_path):
    """An LED point tracked in the new recordings only: named, with the parts, before any embedding."""
    bundle = replace(trained.bundles["grooming"], bodyparts=read_pose(trained.test.pose).bodyparts)
    bundle = load_bundle(bundle.save(tmp_path / "model"))
    lines = trained.test.pose.read_text().splitlines()
    extra = [lines[0] + ",DLC,DLC,DLC", lines[1] + ",LED,LED,LED", lines[2] + ",x,y,likelihood"]
    extra += [line + ",5.0,5.0,0.99" for line in lines[3:]]
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(trained.test.video, new / "ofs03.mp4")
    (new / "ofs03.csv").write_text("\n".join(extra) + "\n")
    cache = EmbeddingCache(tmp_path / "cache")
    with pytest.raises(DataError, match=r"ofs03\.csv: body parts differ from the grooming model's "
                                         r"\(extra: LED; missing: none\).*pose.ignore") as error:
        _predict(trained, [new], tmp_path / "out", cache, bundles=(bundle,))
    assert "\n" not in str(error.value)
    assert not cache.root.exists()


def test_a_pose_file_of_the_wrong_length_is_a_data_error(trained, tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(trained.test.video, new / "ofs03.mp4")
    lines = trained.test.pose.read_text().splitlines(keepends=True)
    (new / "ofs03.csv").write_text("".join(lines[:-50]))  # 3 header rows + 250 of the 300 frames
    with pytest.raises(DataError, match=r"ofs03\.csv: frame-count mismatch .*video 300, pose 250"):
        _predict(trained, [new], tmp_path / "out", EmbeddingCache(tmp_path / "cache"))
    assert not list((tmp_path / "out").glob("*.csv"))


def test_one_pose_file_for_several_videos_is_a_config_error(trained, tmp_path):
    with pytest.raises(ConfigError, match="one file but 3 videos"):
        _predict(trained, [trained.videos], tmp_path / "out", EmbeddingCache(tmp_path / "cache"),
                 pose=trained.test.pose)


def test_predictions_never_overwrite_an_input(trained, tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(trained.test.video, new / "ofs03.mp4")
    pose = Path(shutil.copy(trained.test.pose, new / "ofs03.csv"))
    before = pose.read_bytes()
    with pytest.raises(ConfigError, match="overwrite"):
        _predict(trained, [new], new, EmbeddingCache(tmp_path / "cache"))
    assert pose.read_bytes() == before


def test_same_stem_missing_path_and_empty_folder(trained, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(trained.test.video, other / "ofs03.avi")
    cache = EmbeddingCache(tmp_path / "cache")
    with pytest.raises(ConfigError, match="rename one or predict them separately"):
        _predict(trained, [trained.test.video, other], tmp_path / "out", cache, pose=trained.poses)
    with pytest.raises(DataError, match="nowhere.mp4: no such video file or folder"):
        _predict(trained, [tmp_path / "nowhere.mp4"], tmp_path / "out", cache)
    with pytest.raises(ConfigError, match="no video to predict"):
        _predict(trained, [], tmp_path / "out", cache)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no video files in this folder"):
        _predict(trained, [tmp_path / "empty"], tmp_path / "out", cache)
    assert not (tmp_path / "out").exists()


def test_find_videos_sorts_folders_keeps_files_and_drops_repeats(tmp_path):
    for name in ("b.MP4", "a.avi", ".partial.mp4", "c.txt", "d.csv"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.mp4").write_bytes(b"")
    assert find_videos([tmp_path]) == [tmp_path / "a.avi", tmp_path / "b.MP4"]
    assert find_videos([tmp_path / "sub" / "e.mp4", tmp_path, tmp_path / "a.avi"]) == [
        tmp_path / "sub" / "e.mp4", tmp_path / "a.avi", tmp_path / "b.MP4"]


def test_find_pose_prefers_exact_names_then_the_first_deeplabcut_file(tmp_path):
    video = tmp_path / "m1.mp4"
    video.write_bytes(b"")
    assert find_pose(video) is None
    for name in ("m10.csv", "m10DLC_x.csv", "m1DLC_b.csv", "m1DLC_a.h5", "m1DLC_a.pickle"):
        (tmp_path / name).write_text("")
    assert find_pose(video) == tmp_path / "m1DLC_a.h5"
    (tmp_path / "m1.h5").write_text("")
    assert find_pose(video) == tmp_path / "m1.h5"
    (tmp_path / "m1.csv").write_text("")
    assert find_pose(video) == tmp_path / "m1.csv"

    poses = tmp_path / "poses"
    poses.mkdir()
    assert find_pose(video, poses) is None  # a --pose folder replaces the video's own folder
    (poses / "m1DLC_resnet.csv").write_text("")
    assert find_pose(video, poses) == poses / "m1DLC_resnet.csv"
    assert find_pose(video, tmp_path / "m10.csv") == tmp_path / "m10.csv"  # a file is taken as given

    odd = tmp_path / "m[1].mp4"
    odd.write_bytes(b"")
    (tmp_path / "m[1]DLC_a.csv").write_text("")
    assert find_pose(odd) == tmp_path / "m[1]DLC_a.csv"


# --------------------------------------------------------------------------------------------
# the CSV


def test_csv_round_trips_float32_and_is_replaced_atomically(tmp_path):
    rng = np.random.default_rng(0)
    proba = np.concatenate([rng.random(11_997), [0.0, 1.0, 1.2345678e-9]]).astype(np.float32)
    labels = (proba > 0.5).astype(np.int8)
    path = write_predictions_csv(tmp_path / "v.csv", 29.97, {"groom": proba}, {"groom": labels})
    table = pd.read_csv(path)
    np.testing.assert_array_equal(table["groom_probability"].to_numpy().astype(np.float32), proba)
    np.testing.assert_array_equal(table["groom_label"], labels)
    np.testing.assert_array_equal(table["time_s"], np.round(np.arange(12_000) / 29.97, 6))
    assert path.read_text().splitlines()[2].startswith("1,0.033367,")

    written = path.read_bytes()
    broken = proba.astype(object)
    broken[-1] = "not a number"  # fails on the last rows, after the first ones are on disk
    with pytest.raises(ValueError):
        write_predictions_csv(path, 29.97, {"groom": broken}, {"groom": labels})
    assert path.read_bytes() == written
    assert os.listdir(tmp_path) == ["v.csv"]  # no temporary file left behind
