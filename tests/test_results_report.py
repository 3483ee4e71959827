"""Leaderboard files from hand-built rows: exact CSV columns and values, escaping, self-contained HTML;
the board's statistics (standard error, bootstrap interval, paired difference to the top row)."""

from __future__ import annotations

import csv
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score

from mbr_bench.benchmark.results import types
from mbr_bench.benchmark.results.plots import FIGURE_STEMS
from mbr_bench.benchmark.results.report import (
    LEADERBOARD_COLUMNS,
    TERMINAL_HEADERS,
    behaviour_heading,
    markdown_table,
    rows_to_records,
    terminal_table,
    write_csv,
    write_report,
)
from mbr_bench.benchmark.results.types import (
    PairResult,
    VideoPrediction,
    bootstrap_mean_interval,
    bootstrap_test_interval,
    bout_bootstrap_interval,
    bout_segments,
    fill_statistics,
    paired_difference,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = '<script>alert("x")</script> cuda & cudnn mismatch'


def make_videos(rng: np.random.Generator, ids: tuple[str, ...], skill: float, threshold: float):
    videos = []
    for video_id in ids:
        n = 240
        y = np.zeros(n, dtype=int)
        for start in rng.integers(0, n - 25, size=4):
            y[start:start + rng.integers(8, 25)] = 1
        proba = np.clip(skill * y + (1 - skill) * rng.random(n), 0.0, 1.0)
        raw = (proba >= threshold).astype(int)
        videos.append(VideoPrediction(video_id, y, proba, raw, raw.copy(), fps=25.0))
    return videos


def make_row(rng, behaviour: str, pair: str, cv: float, test_f1: float, cost: float,
             test_ids: tuple[str, ...] = ("t1", "t2"), folds: dict[str, float] | None = None) -> PairResult:
    backbone, head = pair.split("+")
    raw = {"accuracy": 0.9123456789012345, "precision": 0.81, "recall": 0.72, "f1": test_f1,
           "pr_auc": test_f1 + 0.05, "bout_f1_iou10": 0.7, "bout_f1_iou25": 0.6, "bout_f1_iou50": 0.4}
    post = {**raw, "f1": test_f1 + 0.01, "precision": 0.83, "recall": 0.74, "bout_f1_iou50": 0.55,
            "bout_count_error": 0.25, "mean_duration_error": 1 / 3}
    videos = make_videos(rng, test_ids, skill=test_f1, threshold=0.4321)
    return PairResult(
        behaviour, backbone, head, n_trials=20, cv_pr_auc_mean=cv, cv_pr_auc_std=0.021, cv_n_folds=5,
        best_trial=7, params={"units": 64, "dropout": 0.1}, threshold=0.4321, threshold_rule="max_f1",
        postprocess={"min_bout": 5, "closing": 3, "opening": 1},
        test_raw=raw if test_ids else {}, test_post=post if test_ids else {},
        search_cpu_seconds=cost, refit_cpu_seconds=cost / 20, inference_fps=12345.6,
        embedding_seconds_per_frame=0.0042, n_params=12345, refit_run_id=f"run-{pair}" if test_ids else None,
        cv_video_scores=folds if folds is not None else {"v1": cv - 0.1, "v2": cv, "v3": cv + 0.05},
        # As the refit's test_videos.json: each video's own PR-AUC.
        test_video_scores={v.video_id: average_precision_score(v.y_true, v.proba) for v in videos},
        test_videos=videos,
    )


@pytest.fixture(scope="module")
def rows_by_behaviour() -> dict[str, list[PairResult]]:
    rng = np.random.default_rng(42)
    grooming = [
        # Test scores disagree with CV: the order must follow CV.
        make_row(rng, "grooming", "pose+lstm", cv=0.70, test_f1=0.9, cost=50.0),
        make_row(rng, "grooming", "resnet+tcn", cv=0.85, test_f1=0.6, cost=812.4),
        PairResult("grooming", "vit", "gru", error=EVIL, search_cpu_seconds=3.0),
    ]
    rearing = [
        make_row(rng, "rearing", "pose+mlp", cv=0.55, test_f1=0.5, cost=20.0),
        make_row(rng, "rearing", "resnet+lstm", cv=0.65, test_f1=0.7, cost=1500.0),
        # No refit; its folds differ from the top row's by noise only (paired t: indistinguishable).
        make_row(rng, "rearing", "effnet+tcn", cv=0.60, test_f1=0.0, cost=300.0, test_ids=(),
                 folds={"v1": 0.62, "v2": 0.50, "v3": 0.68}),
    ]
    return {"grooming": grooming, "rearing": rearing}


@pytest.fixture(scope="module")
def report(tmp_path_factory, rows_by_behaviour) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("report") / "nested"
    meta = {"dataset": "openfield <v2>", "date": "2025-01-01", "machine": "ci & co"}
    return out, write_report(rows_by_behaviour, out, title="demo board", meta=meta)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_records_follow_cv_order_and_columns(rows_by_behaviour):
    records = rows_to_records(rows_by_behaviour["grooming"] + rows_by_behaviour["rearing"])
    assert [(r["behaviour"], r["backbone"], r["head"]) for r in records] == [
        ("grooming", "resnet", "tcn"), ("grooming", "pose", "lstm"), ("grooming", "vit", "gru"),
        ("rearing", "resnet", "lstm"), ("rearing", "effnet", "tcn"), ("rearing", "pose", "mlp"),
    ]
    assert all(tuple(r) == LEADERBOARD_COLUMNS for r in records)
    best = records[0]
    assert best["postprocess"] == "closing=3 opening=1 min_bout=5"
    assert best["training_cpu_seconds"] == pytest.approx(812.4 * 1.05)
    assert best["test_f1"] == 0.6 and best["test_f1_post"] == 0.61
    assert best["bout_f1_iou50"] == 0.55 and best["bout_f1_iou50_raw"] == 0.4
    assert json.loads(best["params"]) == {"dropout": 0.1, "units": 64}
    failed = records[2]
    assert failed["status"] == "failed" and failed["error"] == EVIL
    assert failed["cv_pr_auc_mean"] is None and failed["n_params"] is None and failed["params"] is None


def test_csv_round_trips(tmp_path, rows_by_behaviour):
    rows = rows_by_behaviour["grooming"] + rows_by_behaviour["rearing"]
    path = write_csv(rows, tmp_path / "board.csv")
    header, lines = read_csv(path)
    assert header == list(LEADERBOARD_COLUMNS)
    assert len(lines) == 6
    assert [f"{r['backbone']}+{r['head']}" for r in lines[:3]] == ["resnet+tcn", "pose+lstm", "vit+gru"]
    best = lines[0]
    assert best["status"] == "ok" and best["error"] == ""
    assert float(best["test_accuracy"]) == 0.9123456789012345  # exact, not rounded
    assert float(best["mean_duration_error"]) == 1 / 3
    assert float(best["cv_pr_auc_mean"]) == 0.85 and float(best["cv_pr_auc_std"]) == 0.021
    assert int(best["cv_n_folds"]) == 5 and int(best["n_trials"]) == 20 and int(best["best_trial"]) == 7
    assert float(best["threshold"]) == 0.4321 and best["threshold_rule"] == "max_f1"
    assert float(best["inference_fps"]) == 12345.6 and int(best["n_params"]) == 12345
    assert float(best["embedding_seconds_per_frame"]) == 0.0042
    assert best["refit_run_id"] == "run-resnet+tcn"
    failed = lines[2]
    assert failed["status"] == "failed" and failed["error"] == EVIL
    assert failed["cv_pr_auc_mean"] == "" and failed["test_f1"] == "" and failed["best_trial"] == ""
    assert float(failed["search_cpu_seconds"]) == 3.0 and failed["refit_cpu_seconds"] == ""
    no_refit = next(r for r in lines if r["backbone"] == "effnet")
    assert no_refit["status"] == "ok" and no_refit["test_pr_auc_mean"] == "" and no_refit["refit_run_id"] == ""
    assert no_refit["test_pr_auc_low"] == "" and no_refit["test_ci_unit"] == "" and no_refit["test_pr_auc_pooled"] == ""
    assert not list(tmp_path.glob(".*.tmp"))


FOLD_SE = float(np.std([-0.1, 0.0, 0.05], ddof=1) / np.sqrt(3))  # make_row's fold offsets


def test_markdown_table(rows_by_behaviour):
    table = markdown_table(rows_by_behaviour["grooming"])
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 3
    n_cells = lines[0].count("|")
    assert all(line.count("|") - line.count("\\|") == n_cells for line in lines)
    best = rows_by_behaviour["grooming"][1]
    low, high = best.test_ci
    assert lines[2].startswith(f"| resnet+tcn | 0.850 ± {FOLD_SE:.3f} (5) | {best.test_pr_auc_mean:.3f} "
                               f"[{low:.3f}, {high:.3f}] | — |")
    assert "812 + 41 s" in lines[2] and "12,346" in lines[2] and "4.20" in lines[2] and "12,345" in lines[2]
    assert lines[3].startswith("| pose+lstm |")
    failed = lines[4]
    assert "failed: &lt;script&gt;alert(\"x\")&lt;/script&gt; cuda &amp; cudnn mismatch" in failed
    assert "<script" not in table
    assert failed.endswith(" - | - |")


def test_terminal_table(rows_by_behaviour):
    rows = rows_by_behaviour["grooming"]
    rows = [*rows, PairResult("grooming", "x", "y", error="E" * 200)]
    text = terminal_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["pair", "CV", "PR-AUC"]
    assert lines[2].startswith("resnet+tcn") and lines[3].startswith("pose+lstm")
    assert f"0.850 ± {FOLD_SE:.3f} (5)" in lines[2] and "812 + 41 s" in lines[2] and " 20 " in lines[2]
    assert "0.700 ± " in lines[3] and "-0.150 ± 0.000" in lines[3] and "≈" not in lines[3]
    assert "failed: <script>" in text  # a terminal shows the error as it is
    long_error = next(line for line in lines if line.startswith("x+y"))
    assert "E" * 59 in long_error and "E" * 61 not in long_error
    table = printed_table(text)
    assert [line["pair"] for line in table] == ["resnet+tcn", "pose+lstm", "vit+gru", "x+y"]
    assert table[0]["Δ top"] == "—" and table[0]["trials"] == "20"
    assert table[1]["Δ top"] == "-0.150 ± 0.000"
    assert table[2]["Δ top"] == "" and table[2]["CV PR-AUC"] == ""  # failed: no comparison
    best = rows[1]
    assert table[0]["test PR-AUC"] == f"{best.test_pr_auc_mean:.3f} [{best.test_ci[0]:.3f}, {best.test_ci[1]:.3f}]"
    assert float(table[0]["test pooled"]) == pytest.approx(best.test_pr_auc_pooled, abs=5e-4)
    legend = text.split("\n\n", 1)[1].replace("\n", " ")  # after the table and a blank line, wrapped
    assert "± standard error over folds" in legend and "≈" in legend and "over the test videos" in legend


def printed_table(text: str) -> list[dict[str, str]]:
    """A `terminal_table` as {column: cell} per row, cut at the dashes of the rule under the header."""
    lines = text.split("\n\n", 1)[0].splitlines()
    spans = [match.span() for match in re.finditer(r"-+", lines[1])]

    def cells(line):
        return [line[start:end].strip() for start, end in spans]

    assert cells(lines[0])[1:len(TERMINAL_HEADERS) + 1] == list(TERMINAL_HEADERS)
    return [dict(zip(cells(lines[0]), cells(line))) for line in lines[2:]]


def test_report_files(report, rows_by_behaviour):
    out, paths = report
    assert list(paths)[:3] == ["csv", "markdown", "html"]
    expected_pngs = [f"{b}_{stem}" for b in rows_by_behaviour for stem in FIGURE_STEMS]
    assert list(paths)[3:] == expected_pngs
    for key in expected_pngs:
        assert paths[key] == out / f"{key}.png"
        assert paths[key].read_bytes().startswith(PNG_SIGNATURE)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["leaderboard.csv", "leaderboard.md", "leaderboard.html", *(f"{k}.png" for k in expected_pngs)]
    )  # no temporary file left behind
    header, lines = read_csv(paths["csv"])
    assert header == list(LEADERBOARD_COLUMNS) and len(lines) == 6
    assert {r["behaviour"] for r in lines} == {"grooming", "rearing"}


def test_report_markdown(report):
    _, paths = report
    text = paths["markdown"].read_text(encoding="utf-8")
    assert text.startswith("# demo board\n")
    assert "## grooming" in text and "## rearing" in text
    assert text.index("## grooming") < text.index("## rearing")
    assert "**dataset**: openfield &lt;v2&gt;" in text
    assert "failed: &lt;script&gt;" in text and "<script" not in text
    for behaviour in ("grooming", "rearing"):
        section = text.split(f"## {behaviour}")[1].split("## ")[0]
        for stem in FIGURE_STEMS:
            assert f"]({behaviour}_{stem}.png)" in section


class _Checker(HTMLParser):
    """Counts tags and checks that non-void elements close in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_report_html_is_self_contained_and_escaped(report):
    _, paths = report
    page = paths["html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    assert "cuda &amp; cudnn" in page and "openfield &lt;v2&gt;" in page and "ci &amp; co" in page
    assert page.count("data:image/png;base64,") == 2 * len(FIGURE_STEMS)
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    tags = [tag for tag, _ in checker.tags]
    assert tags.count("section") == 2 and tags.count("table") == 2 and tags.count("img") == 2 * len(FIGURE_STEMS)
    assert "script" not in tags and "link" not in tags
    for tag, attrs in checker.tags:
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
        for name in ("src", "href"):
            if name in attrs and tag != "img":
                assert attrs[name].startswith("#")  # in-page links only
    text = "".join(checker.text)
    assert EVIL.split(" cuda")[0] in text  # the error reads as written once unescaped
    # The failed pair's error spans the metric cells; the rows follow CV order.
    assert re.search(r'<td class="failed" colspan="\d+">failed: &lt;script&gt;', page)
    assert page.index(">resnet+tcn<") < page.index(">pose+lstm<") < page.index(">vit+gru<")
    assert "&lt;script&gt;alert(&quot;x&quot;)" in page or "&lt;script&gt;alert(\"x\")" in page


def test_report_file_names_are_safe(tmp_path):
    rng = np.random.default_rng(3)
    rows = {"../up/and away": [make_row(rng, "../up/and away", "a+b", 0.5, 0.5, 10.0)]}
    paths = write_report(rows, tmp_path)
    pngs = [p for key, p in paths.items() if key not in ("csv", "markdown", "html")]
    assert len(pngs) == len(FIGURE_STEMS)
    assert all(p.parent == tmp_path and p.is_file() for p in pngs)
    assert "&lt;" not in paths["html"].read_text()  # nothing to escape here, nothing mangled
    assert math.isfinite(float(read_csv(paths["csv"])[1][0]["cv_pr_auc_mean"]))


def test_a_crash_while_writing_leaves_the_old_file(tmp_path, monkeypatch, rows_by_behaviour):
    from mbr_bench.core import files as files_module

    path = tmp_path / "leaderboard.csv"
    path.write_text("old\n")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_csv(rows_by_behaviour["grooming"], path)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["leaderboard.csv"]


# --------------------------------------------------------------------------- the board's statistics


def test_standard_error_and_cv_cell_from_fold_scores():
    row = PairResult("b", "a", "h", cv_pr_auc_mean=0.7, cv_n_folds=4,
                     cv_video_scores={"v1": 0.61, "v2": 0.74, "v3": 0.69, "v4": 0.76})
    fill_statistics([row])
    expected = np.std([0.61, 0.74, 0.69, 0.76], ddof=1) / 2.0
    assert row.cv_pr_auc_se == pytest.approx(expected)
    assert rows_to_records([row])[0]["cv_pr_auc_se"] == pytest.approx(expected)
    assert f"0.700 ± {expected:.3f} (4)" in terminal_table([row])
    logged = PairResult("b", "a", "h", cv_pr_auc_mean=0.7, cv_pr_auc_se=0.0123, cv_n_folds=4,
                        cv_video_scores=dict(row.cv_video_scores))
    fill_statistics([logged])
    assert logged.cv_pr_auc_se == 0.0123  # what the search logged wins
    assert math.isnan(types.standard_error([0.5])) and math.isnan(types.standard_error([0.5, math.nan]))


def test_bootstrap_mean_interval():
    values = np.array([0.55, 0.62, 0.71, 0.80, 0.66])
    low, high = bootstrap_mean_interval(values, seed=3)
    assert low <= values.mean() <= high and low >= values.min() and high <= values.max()
    assert bootstrap_mean_interval(values, seed=3) == (low, high)  # deterministic for a seed
    assert bootstrap_mean_interval(values, seed=4) != (low, high)
    few = np.linspace(0.5, 0.9, 4)
    many = np.tile(few, 10)  # the same spread over ten times the units

    def width(interval):
        return interval[1] - interval[0]

    assert width(bootstrap_mean_interval(few)) > 2 * width(bootstrap_mean_interval(many))
    steady, variable = np.linspace(0.65, 0.75, 8), np.linspace(0.3, 1.0, 8)
    assert width(bootstrap_mean_interval(variable)) > 3 * width(bootstrap_mean_interval(steady))
    assert all(math.isnan(v) for v in bootstrap_mean_interval([0.7]))
    assert all(math.isnan(v) for v in bootstrap_mean_interval([0.7, math.nan]))  # one finite unit


def test_bout_segments_cut_between_bouts():
    y = np.array([0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 1, 0])
    assert bout_segments(y) == [(0, 4), (4, 8), (8, 12)]  # bouts end at 3, 7 and start at 6, 9
    assert bout_segments(np.zeros(5)) == [] and bout_segments(np.ones(4)) == [(0, 4)]


def video_with_bouts(rng, n_bouts: int, spread: float, gap: int = 40, bout: int = 12) -> VideoPrediction:
    """One video of `n_bouts` bouts, each detected with its own quality (0.5 ± spread)."""
    y, proba = [], []
    for quality in np.clip(0.5 + spread * rng.standard_normal(n_bouts), 0.05, 0.95):
        y += [0] * gap + [1] * bout
        proba += list(rng.random(gap) * (1 - quality)) + list(quality + rng.random(bout) * (1 - quality))
    y, proba = np.array(y), np.clip(np.array(proba), 0.0, 1.0)
    return VideoPrediction("only", y, proba, (proba >= 0.5).astype(int), (proba >= 0.5).astype(int), 25.0)


def test_weighted_average_precision_is_the_concatenation():
    rng = np.random.default_rng(5)
    video = video_with_bouts(rng, 6, 0.2)
    y, proba = video.y_true, np.round(video.proba, 2)  # with ties
    segments = bout_segments(y)
    of_frame = np.repeat(np.arange(len(segments)), [b - a for a, b in segments])
    order = np.argsort(proba, kind="mergesort")[::-1]
    last = np.r_[np.flatnonzero(np.diff(proba[order])), proba.size - 1]
    for _ in range(5):
        drawn = rng.integers(0, len(segments), len(segments))
        weights = np.bincount(drawn, minlength=len(segments)).astype(float)[of_frame[order]][None, :]
        frames = np.concatenate([np.arange(*segments[i]) for i in drawn])
        expected = average_precision_score(y[frames], proba[frames])
        got = types._weighted_average_precision(y[order].astype(float), weights, last)[0]
        assert got == pytest.approx(expected, abs=1e-12)


def test_bout_bootstrap_with_one_test_video():
    rng = np.random.default_rng(7)
    video = video_with_bouts(rng, 12, 0.2)
    point = average_precision_score(video.y_true, video.proba)
    interval = bootstrap_test_interval({"only": point}, [video])
    assert interval.unit == "bouts" and interval.n_units == 12
    assert interval.low <= point <= interval.high
    assert bout_bootstrap_interval(video.y_true, video.proba) == (interval.low, interval.high)  # seeded
    # The same twelve bouts ten times over: the same spread over ten times the units.
    many = VideoPrediction("many", np.tile(video.y_true, 10), np.tile(video.proba, 10), np.tile(video.label_raw, 10),
                           np.tile(video.label_post, 10), 25.0)
    wide = bout_bootstrap_interval(video.y_true, video.proba)
    narrow = bout_bootstrap_interval(many.y_true, many.proba)
    assert wide[1] - wide[0] > 2 * (narrow[1] - narrow[0])  # fewer bouts, wider
    steady = video_with_bouts(np.random.default_rng(8), 12, 0.02)
    steady_interval = bout_bootstrap_interval(steady.y_true, steady.proba)
    assert wide[1] - wide[0] > 2 * (steady_interval[1] - steady_interval[0])  # more variable bouts, wider
    one_bout = VideoPrediction("one", np.r_[np.zeros(20), np.ones(5), np.zeros(20)].astype(int), np.full(45, 0.5),
                               np.zeros(45, int), np.zeros(45, int))
    none = bootstrap_test_interval({"one": 1.0}, [one_bout])
    assert math.isnan(none.low) and math.isnan(none.high) and none.unit == ""
    # Two test videos: over videos, whatever their bouts.
    two = bootstrap_test_interval({"a": 0.6, "b": 0.8}, [video, many])
    assert two.unit == "videos" and 0.6 <= two.low <= two.high <= 0.8


def test_paired_difference_by_hand():
    top = {"v1": 0.80, "v2": 0.85, "v3": 0.78, "v4": 0.90, "v5": 0.83}
    worse = {v: s - 0.10 + d for (v, s), d in zip(top.items(), (0.01, -0.01, 0.02, 0.0, -0.02))}
    result = paired_difference(worse, top)
    d = np.array([worse[v] - top[v] for v in top])
    assert result.n == 5 and result.mean == pytest.approx(d.mean())
    assert result.se == pytest.approx(d.std(ddof=1) / np.sqrt(5))
    assert not result.indistinguishable  # clearly worse on every fold
    noisy = {v: s + d for (v, s), d in zip(top.items(), (0.06, -0.08, 0.05, -0.07, 0.01))}
    result = paired_difference(noisy, top)
    d = np.array([noisy[v] - top[v] for v in top])
    assert abs(result.mean) <= stats.t.ppf(0.975, 4) * result.se and result.indistinguishable
    # Matched by held-out video, not by position; unshared or NaN folds are left out.
    shuffled = {"v9": 0.1, "v3": top["v3"] - 0.1, "v1": top["v1"] - 0.1, "v2": math.nan}
    result = paired_difference(shuffled, top)
    assert result.n == 2 and result.mean == pytest.approx(-0.1) and result.se == pytest.approx(0.0, abs=1e-12)
    single = paired_difference({"v1": 0.2}, top)
    assert single.n == 1 and math.isnan(single.se) and single.indistinguishable  # too few to tell apart


def test_rows_show_the_paired_difference_and_marks(rows_by_behaviour):
    records = {(r["behaviour"], r["backbone"] + "+" + r["head"]): r
               for r in rows_to_records(rows_by_behaviour["grooming"] + rows_by_behaviour["rearing"])}
    top = records[("rearing", "resnet+lstm")]
    assert top["top_pair"] == "resnet+lstm" and top["delta_top_mean"] is None
    assert top["indistinguishable_from_top"] is None
    worse = records[("rearing", "pose+mlp")]  # every fold 0.1 lower: distinguishable
    assert worse["delta_top_mean"] == pytest.approx(-0.10) and worse["delta_top_n"] == 3
    assert worse["indistinguishable_from_top"] is False
    noisy = records[("rearing", "effnet+tcn")]
    d = np.array([0.62, 0.50, 0.68]) - np.array([0.55, 0.65, 0.70])
    assert noisy["delta_top_mean"] == pytest.approx(d.mean())
    assert noisy["delta_top_se"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert noisy["indistinguishable_from_top"] is True
    failed = records[("grooming", "vit+gru")]
    assert failed["top_pair"] is None and failed["indistinguishable_from_top"] is None
    table = markdown_table(rows_by_behaviour["rearing"]).splitlines()
    assert table[2].split(" | ")[3] == "—"  # the top row
    assert table[3].startswith("| effnet+tcn |") and table[3].split(" | ")[3] == \
        f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(3):.3f} ≈"
    assert table[4].startswith("| pose+mlp |") and "≈" not in table[4]
    # Only the grooming rows given: the comparison is within the rows shown.
    assert records[("grooming", "pose+lstm")]["top_pair"] == "resnet+tcn"


def test_test_columns_per_video_and_pooled(rows_by_behaviour):
    row = rows_by_behaviour["grooming"][1]
    record = next(r for r in rows_to_records([row]))
    per_video = [average_precision_score(v.y_true, v.proba) for v in row.test_videos]
    y = np.concatenate([v.y_true for v in row.test_videos])
    proba = np.concatenate([v.proba for v in row.test_videos])
    assert record["test_pr_auc_mean"] == pytest.approx(np.mean(per_video))
    assert record["test_pr_auc_pooled"] == pytest.approx(average_precision_score(y, proba))
    assert record["test_pr_auc_low"] <= record["test_pr_auc_mean"] <= record["test_pr_auc_high"]
    assert record["test_ci_unit"] == "videos" and record["n_trials"] == 20
    # Logged by the refit: shown as logged.
    logged = make_row(np.random.default_rng(9), "grooming", "a+b", 0.5, 0.5, 10.0)
    logged.test_raw = {**logged.test_raw, "pr_auc_mean": 0.777, "pr_auc_pooled": 0.666}
    record = rows_to_records([logged])[0]
    assert record["test_pr_auc_mean"] == 0.777 and record["test_pr_auc_pooled"] == 0.666
    # Without predictions or per-video scores (an older refit read back): the pooled "pr_auc".
    old = PairResult("grooming", "o", "ld", cv_pr_auc_mean=0.5, test_raw={"pr_auc": 0.42})
    record = rows_to_records([old])[0]
    assert record["test_pr_auc_pooled"] == 0.42 and record["test_pr_auc_mean"] is None


def test_one_test_video_is_resampled_over_bouts(tmp_path):
    rng = np.random.default_rng(11)
    row = make_row(rng, "grooming", "a+b", 0.5, 0.7, 10.0, test_ids=("t1",))
    single = make_row(rng, "grooming", "c+d", 0.4, 0.7, 10.0, test_ids=("t1",))
    one_bout = single.test_videos[0]
    one_bout.y_true[:] = 0
    one_bout.y_true[100:110] = 1
    single.test_video_scores = {"t1": average_precision_score(one_bout.y_true, one_bout.proba)}
    records = rows_to_records([row, single])
    assert records[0]["test_ci_unit"] == "bouts"
    assert records[0]["test_pr_auc_low"] <= records[0]["test_pr_auc_mean"] <= records[0]["test_pr_auc_high"]
    assert records[1]["test_ci_unit"] is None and records[1]["test_pr_auc_low"] is None
    table = printed_table(terminal_table([row, single]))
    assert table[1]["test PR-AUC"] == f"{single.test_video_scores['t1']:.3f} [–]"
    assert "over the bouts of the one test video" in terminal_table([row]).replace("\n", " ")
    paths = write_report({"grooming": [row, single]}, tmp_path)
    _, lines = read_csv(paths["csv"])
    assert lines[0]["test_ci_unit"] == "bouts" and lines[1]["test_pr_auc_low"] == ""


def test_statistics_are_idempotent(rows_by_behaviour):
    rows = rows_by_behaviour["grooming"] + rows_by_behaviour["rearing"]
    first = rows_to_records(rows)
    fill_statistics(rows)
    assert rows_to_records(rows) == first


def test_legend_heading_and_test_evaluations(tmp_path, rows_by_behaviour):
    assert behaviour_heading("grooming", rows_by_behaviour["grooming"]) == \
        "grooming: 3 pair(s), sorted by CV PR-AUC; test = held-out videos"
    assert behaviour_heading("grooming", rows_by_behaviour["grooming"], 4).endswith(", test set evaluated 4 times")
    assert behaviour_heading("grooming", [], 1).endswith("evaluated 1 time")
    paths = write_report(rows_by_behaviour, tmp_path, test_evaluations={"grooming": 3, "rearing": 1})
    markdown = paths["markdown"].read_text(encoding="utf-8")
    grooming = markdown.split("## grooming")[1].split("## rearing")[0]
    assert "Test set evaluated 3 times" in grooming and "Test set evaluated 1 time " in markdown
    assert "± standard error over folds" in grooming and "≈" in grooming
    page = paths["html"].read_text(encoding="utf-8")
    assert page.count('<p class="legend">') == 2 and "Test set evaluated 3 times" in page
    assert page.count('<tr class="top">') == 2 and page.count('<tr class="tie">') == 1
    assert re.search(r'<tr class="tie"><td class="pair">effnet\+tcn</td>.*?<td class="delta">[^<]*≈</td>', page)


def test_log_to_mlflow_counts_test_evaluations(tmp_path, rows_by_behaviour):
    from mbr_bench.benchmark.results.leaderboard import LeaderboardOptions, _log_to_mlflow
    from mbr_bench.core.stores import default_tracking_uri
    from mbr_bench.tracking.queries import count_test_evaluations
    from mbr_bench.tracking.runs import Tracker
    from mbr_bench.tracking.schema import BEST_TEST_PR_AUC, KIND_LEADERBOARD, KIND_REFIT, N_TEST_EVALUATIONS

    tracker = Tracker(default_tracking_uri(tmp_path))
    assert count_test_evaluations(tracker.client, "grooming") == 0  # no experiment yet
    for name in ("a", "b", "c"):
        with tracker.result_run("grooming", KIND_REFIT, f"{name} refit", {}):
            pass
    with pytest.raises(RuntimeError), tracker.result_run("grooming", KIND_REFIT, "failed refit", {}):
        raise RuntimeError("out of memory")  # never scored the test set
    with tracker.result_run("grooming", KIND_LEADERBOARD, "leaderboard", {}):
        pass
    with tracker.result_run("rearing", KIND_REFIT, "other behaviour", {}):
        pass
    assert count_test_evaluations(tracker.client, "grooming") == 3
    assert count_test_evaluations(tracker.client, "rearing") == 1

    rows = {"grooming": fill_statistics(list(rows_by_behaviour["grooming"]))}
    files = write_report(rows, tmp_path / "board")
    evaluations = {"grooming": count_test_evaluations(tracker.client, "grooming")}
    _log_to_mlflow(tracker, rows, files, LeaderboardOptions("grooming", tmp_path), evaluations)
    experiment = tracker.client.get_experiment_by_name("mbr-bench/grooming")
    board = [r for r in tracker.client.search_runs([experiment.experiment_id],
                                                    f"tags.`mbr.kind` = '{KIND_LEADERBOARD}'")
             if r.data.metrics]
    assert len(board) == 1
    best = rows["grooming"][0]
    assert board[0].data.metrics[N_TEST_EVALUATIONS] == 3
    assert board[0].data.metrics[BEST_TEST_PR_AUC] == pytest.approx(best.test_pr_auc_mean)
