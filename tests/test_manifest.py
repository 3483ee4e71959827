"""dataset.yaml parsing and `dataset check`: every broken input gives one line naming file, problem, fix."""

import pytest
import yaml

from mbr_bench.benchmark.cli import main
from mbr_bench.benchmark.data.check import check_dataset
from mbr_bench.benchmark.data.manifest import load_dataset
from mbr_bench.core.errors import ConfigError, DataError


def _edit(path, change):
    manifest = yaml.safe_load(path.read_text())
    change(manifest)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def _one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_load_resolves_paths_and_splits(tiny_dataset):
    dataset = load_dataset(tiny_dataset())
    assert dataset.behaviours == ("rearing",)
    assert [v.id for v in dataset.split("train")] == ["t0", "t1"]
    assert [v.id for v in dataset.split("test")] == ["t2"]
    assert dataset.videos[0].video.is_absolute() and dataset.videos[0].video.is_file()
    assert dataset.crop.size == 32 and dataset.crop.centre == ("midbody",)
    assert load_dataset(tiny_dataset().parent).path == dataset.path  # a folder works too


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (lambda m: m["videos"][1].update(video="videos/nope.mp4"), ["video 't1' video file not found", "nope.mp4"]),
        (lambda m: m["videos"][1].update(id="t0"), ["duplicate video id 't0'", "unique id"]),
        (lambda m: m["videos"][2].update(split="train"), ["no labelled test video", "split: test"]),
        (lambda m: m["videos"][2].update(split="validation"), ["split 'validation'", "train or split: test"]),
        (lambda m: m["videos"][0].pop("split"), ["has labels but no split"]),
        (lambda m: m.update(behaviors_typo=1), ["unknown key(s) ['behaviors_typo']"]),
        (lambda m: m.pop("behaviours"), ["no behaviours are listed"]),
        (lambda m: m.update(videos=[]), ["no videos listed"]),
    ],
)
def test_manifest_errors(tiny_dataset, capsys, change, fragments):
    path = _edit(tiny_dataset(), change)
    with pytest.raises(DataError):
        load_dataset(path)
    err = _one_line_error(capsys, ["dataset", "check", str(path)], str(path), *fragments)
    assert err.startswith("mbr-bench: error: ")


def test_invalid_yaml_and_missing_manifest(tmp_path, capsys):
    bad = tmp_path / "dataset.yaml"
    bad.write_text("videos: [\n  - id: a\n")
    _one_line_error(capsys, ["dataset", "check", str(bad)], "not valid YAML at line", "fix the syntax")
    _one_line_error(capsys, ["dataset", "check", str(tmp_path / "none.yaml")], "dataset manifest not found")


def test_bad_crop_setting_is_a_config_error(tiny_dataset):
    path = _edit(tiny_dataset(), lambda m: m["crop"].update(mode="zoom"))
    with pytest.raises(ConfigError, match="crop"):
        load_dataset(path)


def test_check_reports_frames_and_behaviour_statistics(tiny_dataset, capsys):
    dataset = load_dataset(tiny_dataset(n_frames=40))
    report = check_dataset(dataset)
    assert [v.frames for v in report.videos] == [40, 40, 40]
    first = report.videos[0]
    assert first.bodyparts == ("midbody", "snout", "tailbase")  # by name, not file order
    assert (first.width, first.height, first.fps) == (64, 64, 10.0)
    stats = first.behaviours["rearing"]
    assert (stats.positives, stats.bouts) == (13, 2)  # frames 5-14 and 25-27
    assert stats.mean_bout == pytest.approx(6.5)
    assert stats.percent == pytest.approx(32.5)
    assert report.warnings == []

    assert main(["dataset", "check", str(dataset.path)]) == 0
    out = capsys.readouterr().out
    assert "t0" in out and "positive frames" in out and "body parts (3): midbody, snout, tailbase" in out
    assert out.splitlines()[-1] == "ok"


def test_check_frame_count_mismatch_gives_both_counts(tiny_dataset, capsys):
    path = tiny_dataset(n_frames=40)
    pose = path.parent / "poses" / "t1.csv"
    pose.write_text("\n".join(pose.read_text().splitlines()[:-3]) + "\n")  # drop 3 frames
    _one_line_error(capsys, ["dataset", "check", str(path)], str(pose), "video 40, pose 37")

    path = tiny_dataset(n_frames=40)
    labels = path.parent / "labels" / "t2.csv"
    labels.write_text("\n".join(labels.read_text().splitlines()[:-1]) + "\n")
    _one_line_error(capsys, ["dataset", "check", str(path)], str(labels), "40", "39")


def test_check_label_values_and_unknown_behaviour(tiny_dataset, capsys):
    path = tiny_dataset()
    labels = path.parent / "labels" / "t0.csv"
    lines = labels.read_text().splitlines()
    lines[8] = lines[8].rsplit(",", 1)[0] + ",2"
    labels.write_text("\n".join(lines) + "\n")
    _one_line_error(capsys, ["dataset", "check", str(path)], str(labels), "0/1")

    path = tiny_dataset()
    labels = path.parent / "labels" / "t0.csv"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join([lines[0] + ",sniffing"] + [line + ",0" for line in lines[1:]]) + "\n")
    _one_line_error(capsys, ["dataset", "check", str(path)], str(labels), "unknown behaviour", "sniffing")


def test_check_warns_when_a_training_video_has_no_positive(tiny_dataset, capsys):
    path = tiny_dataset()
    labels = path.parent / "labels" / "t1.csv"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join([lines[0]] + [line.rsplit(",", 1)[0] + ",0" for line in lines[1:]]) + "\n")
    report = check_dataset(load_dataset(path))
    assert len(report.warnings) == 1 and "'rearing' has no positive frame in training video 't1'" in report.warnings[0]
    assert main(["dataset", "check", str(path)]) == 0
    assert "warning:" in capsys.readouterr().err


def test_unlabelled_dataset_is_fine_and_says_so(tiny_dataset, capsys):
    path = tiny_dataset(labels=False)
    _edit(path, lambda m: m.pop("behaviours"))
    report = check_dataset(load_dataset(path))
    assert any(note.startswith("no labels") for note in report.notes)
    assert main(["dataset", "check", str(path)]) == 0
    assert "note: no labels" in capsys.readouterr().out


def _drop(index, *keys):
    def change(manifest):
        for key in keys:
            manifest["videos"][index].pop(key, None)

    return change


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        # Only train videos must have labels: the searches learn from every one of them.
        (_drop(1, "labels"), ["video 't1' has split: train but no labels",
                              "add labels: for it, or set split: test or leave split out"]),
        (_drop(0, "video", "pose"), ["video 't0' has neither a video nor a pose file",
                                     "add video: (its file), or pose: and fps: for a pose-only entry"]),
        (_drop(0, "video"), ["video 't0' has a pose file but no video, so its frame rate is unknown",
                             "add fps: (frames per second of the recording) to it, or add video:"]),
        (_drop(0, "id"), ["videos[0] has no id", "give it a unique id"]),
    ],
)
def test_manifest_entry_rules(tiny_dataset, capsys, change, fragments):
    path = _edit(tiny_dataset(), change)
    with pytest.raises(DataError) as raised:
        load_dataset(path)
    assert "\n" not in str(raised.value)
    _one_line_error(capsys, ["dataset", "check", str(path)], str(path), *fragments)


def test_unlabelled_test_video_and_pose_only_entry_load(tiny_dataset):
    def change(manifest):
        manifest["videos"][0].pop("video")
        manifest["videos"][0]["fps"] = 10
        manifest["videos"].append({"id": "extra", "video": manifest["videos"][2]["video"],
                                   "pose": manifest["videos"][2]["pose"], "split": "test"})

    dataset = load_dataset(_edit(tiny_dataset(n_frames=30), change))
    t0 = dataset.video("t0")
    assert t0.video is None and t0.pose.is_file() and t0.fps == 10.0
    assert [entry.id for entry in dataset.pose_only] == ["t0"]
    assert dataset.video("extra").labels is None  # a test video may lack labels
    report = check_dataset(dataset)
    assert [(v.id, v.frames, v.resolution) for v in report.videos] == [
        ("t0", 30, "—"), ("t1", 30, "64x64"), ("t2", 30, "64x64"), ("extra", 30, "64x64")]
    assert any(note.startswith("pose-only (no video file): t0;") for note in report.notes)


def test_pose_only_entry_is_checked_for_the_pose_backbone_parts(tiny_dataset, capsys):
    def change(manifest):
        manifest["videos"][0].pop("video")
        manifest["videos"][0]["fps"] = 10
        manifest["pose"] = {"heading": ["tail_base", "snout"]}

    path = _edit(tiny_dataset(), change)
    _one_line_error(capsys, ["dataset", "check", str(path)], "t0.csv: body part 'tail_base' not found",
                    "set pose.heading in dataset.yaml")


def test_check_warns_when_the_manifest_fps_is_not_the_containers(tiny_dataset):
    path = _edit(tiny_dataset(), lambda m: m["videos"][0].update(fps=25))  # the tiny videos are 10 fps
    report = check_dataset(load_dataset(path))
    rate = [w for w in report.warnings if "container says 10" in w]
    assert len(rate) == 1 and "video 't0' has fps: 25" in rate[0] and "150 % apart" in rate[0]
    mixed = [w for w in report.warnings if "different frame rates" in w]
    assert len(mixed) == 1 and "10 fps: t1, t2; 25 fps: t0" in mixed[0]


def test_check_is_quiet_about_a_rate_within_one_percent(tiny_dataset):
    path = _edit(tiny_dataset(), lambda m: [v.update(fps=10.05) for v in m["videos"]])
    assert check_dataset(load_dataset(path)).warnings == []
