"""Leaderboard files from hand-built rows: exact CSV columns and values, escaping, self-contained HTML."""

from __future__ import annotations

import csv
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mbr_bench.benchmark.results.plots import FIGURE_STEMS
from mbr_bench.benchmark.results.report import (
    LEADERBOARD_COLUMNS,
    markdown_table,
    rows_to_records,
    terminal_table,
    write_csv,
    write_report,
)
from mbr_bench.benchmark.results.types import PairResult, VideoPrediction

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
             test_ids: tuple[str, ...] = ("t1", "t2")) -> PairResult:
    backbone, head = pair.split("+")
    raw = {"accuracy": 0.9123456789012345, "precision": 0.81, "recall": 0.72, "f1": test_f1,
           "pr_auc": test_f1 + 0.05, "bout_f1_iou10": 0.7, "bout_f1_iou25": 0.6, "bout_f1_iou50": 0.4}
    post = {**raw, "f1": test_f1 + 0.01, "precision": 0.83, "recall": 0.74, "bout_f1_iou50": 0.55,
            "bout_count_error": 0.25, "mean_duration_error": 1 / 3}
    return PairResult(
        behaviour, backbone, head, n_trials=20, cv_pr_auc_mean=cv, cv_pr_auc_std=0.021, cv_n_folds=5,
        best_trial=7, params={"units": 64, "dropout": 0.1}, threshold=0.4321, threshold_rule="max_f1",
        postprocess={"min_bout": 5, "closing": 3, "opening": 1},
        test_raw=raw if test_ids else {}, test_post=post if test_ids else {},
        search_cpu_seconds=cost, refit_cpu_seconds=cost / 20, inference_fps=12345.6,
        embedding_seconds_per_frame=0.0042, n_params=12345, refit_run_id=f"run-{pair}" if test_ids else None,
        cv_video_scores={"v1": cv - 0.1, "v2": cv, "v3": cv + 0.05},
        test_video_scores={v: test_f1 for v in test_ids},
        test_videos=make_videos(rng, test_ids, skill=test_f1, threshold=0.4321),
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
        make_row(rng, "rearing", "effnet+tcn", cv=0.60, test_f1=0.0, cost=300.0, test_ids=()),  # no refit
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
    assert no_refit["status"] == "ok" and no_refit["test_pr_auc"] == "" and no_refit["refit_run_id"] == ""
    assert not list(tmp_path.glob(".*.tmp"))


def test_markdown_table(rows_by_behaviour):
    table = markdown_table(rows_by_behaviour["grooming"])
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 3
    n_cells = lines[0].count("|")
    assert all(line.count("|") - line.count("\\|") == n_cells for line in lines)
    assert lines[2].startswith("| resnet+tcn | 0.850 ± 0.021 (5) | 0.912 |")
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
    assert "0.850 ± 0.021 (5)" in lines[2] and "812 + 41 s" in lines[2] and "0.912" in lines[2]
    assert "failed: <script>" in text  # a terminal shows the error as it is
    long_error = next(line for line in lines if line.startswith("x+y"))
    assert "E" * 59 in long_error and "E" * 61 not in long_error


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
