"""The leaderboard as files: a CSV of every pair, a markdown report, and one self-contained HTML page.

Rows are always ordered by `sort_rows` (CV score, never test). The primary accuracy on both sides is
the per-video PR-AUC (mean over videos), shown with its uncertainty: CV as mean ± standard error
over folds, test with a bootstrap interval, and each row's paired difference to the top row over
the folds they share, marked "≈" where the two cannot be told apart (`types.fill_statistics`
computes these; every renderer here calls it first). Pooled PR-AUC is a secondary column on both
sides. Every text that comes from the
data (behaviour, backbone and head names, error messages) is escaped for the format it lands in;
the HTML page loads nothing from elsewhere (inline CSS, figures as base64 data URIs, no script).
Files are written under a temporary name in the target folder and then renamed, so a crash never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ...core.files import write_atomic
from ...core.jsonio import json_default
from ..table import format_table
from .plots import behaviour_figures
from .types import UNIT_BOUTS, UNIT_VIDEOS, PairResult, fill_statistics, sort_rows

LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "behaviour",
    "backbone",
    "head",
    "status",
    "error",
    "cv_pr_auc_mean",  # per-video: mean over folds of the held-out video's PR-AUC
    "cv_pr_auc_se",
    "cv_pr_auc_std",
    "cv_pr_auc_pooled",
    "cv_n_folds",
    "top_pair",  # the row the paired difference is taken against
    "delta_top_mean",
    "delta_top_se",
    "delta_top_n",
    "indistinguishable_from_top",
    "n_trials",
    "best_trial",
    "test_pr_auc_mean",  # per-video: mean over test videos of per-video PR-AUC
    "test_pr_auc_low",  # bootstrap interval of test_pr_auc_mean
    "test_pr_auc_high",
    "test_ci_unit",  # videos or bouts: what the interval resampled
    "test_pr_auc_pooled",
    "threshold",
    "threshold_rule",
    "postprocess",
    "test_accuracy",
    "test_precision",
    "test_recall",
    "test_f1",
    "test_f1_post",
    "test_precision_post",
    "test_recall_post",
    "bout_f1_iou10",
    "bout_f1_iou25",
    "bout_f1_iou50",
    "bout_f1_iou50_raw",
    "bout_count_error",
    "mean_duration_error",
    "search_cpu_seconds",
    "refit_cpu_seconds",
    "training_cpu_seconds",
    "inference_fps",
    "embedding_seconds_per_frame",
    "n_params",
    "final",
    "refit_run_id",
    "params",
)

# (record column, metrics dict, key in that dict)
_TEST_METRICS: tuple[tuple[str, str, str], ...] = (
    ("test_accuracy", "test_raw", "accuracy"),
    ("test_precision", "test_raw", "precision"),
    ("test_recall", "test_raw", "recall"),
    ("test_f1", "test_raw", "f1"),
    ("test_f1_post", "test_post", "f1"),
    ("test_precision_post", "test_post", "precision"),
    ("test_recall_post", "test_post", "recall"),
    ("bout_f1_iou10", "test_post", "bout_f1_iou10"),
    ("bout_f1_iou25", "test_post", "bout_f1_iou25"),
    ("bout_f1_iou50", "test_post", "bout_f1_iou50"),
    ("bout_f1_iou50_raw", "test_raw", "bout_f1_iou50"),
    ("bout_count_error", "test_post", "bout_count_error"),
    ("mean_duration_error", "test_post", "mean_duration_error"),
)

_POSTPROCESS_ORDER = ("closing", "opening", "min_bout")

# The compact columns of the markdown, terminal and HTML tables (after "pair"): per-video CV and test
# PR-AUC side by side, then the paired difference to the top row (the CSV holds every metric).
COMPACT_HEADERS: tuple[str, ...] = (
    "CV PR-AUC (per video)",
    "test PR-AUC (per video) [95% CI]",
    "Δ CV vs top (paired)",
    "CV PR-AUC pooled",
    "test PR-AUC pooled",
    "trials",
    "test F1",
    "F1 post",
    "bout F1 @0.1",
    "bout F1 @0.25",
    "bout F1 @0.5",
    "cost (search + refit CPU s)",
    "inference frames/s",
    "embedding ms/frame",
    "params",
)
# The same columns with shorter names, to keep a terminal line short.
TERMINAL_HEADERS: tuple[str, ...] = (
    "CV PR-AUC",
    "test PR-AUC",
    "Δ top",
    "CV pooled",
    "test pooled",
    "trials",
    "F1",
    "F1 post",
    "bout@.1",
    "bout@.25",
    "bout@.5",
    "CPU search+refit",
    "frames/s",
    "emb ms/f",
    "params",
)
_DELTA_COLUMN = COMPACT_HEADERS.index("Δ CV vs top (paired)")
TOP_MARK = "—"  # the Δ cell of the top row
TIE_MARK = "≈"  # ends the Δ cell of a row not distinguishable from the top row
NO_INTERVAL = "–"  # an interval with fewer than 2 units to resample
_TIE_RULE = "|Δ| ≤ t(0.975, n−1)·SE"
_TERMINAL_ERROR_CHARS = 60
_TERMINAL_LEGEND_WIDTH = 110
_MARKDOWN_ERROR_CHARS = 300


# --------------------------------------------------------------------------- records and CSV


def _number(value: Any) -> float | None:
    """A finite float, or None for missing, NaN, infinite or non-numeric values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _param_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def postprocess_text(postprocess: dict) -> str:
    """'closing=3 opening=1 min_bout=5': the known steps in their order, then any other key sorted."""
    keys = [k for k in _POSTPROCESS_ORDER if k in postprocess]
    keys += sorted(k for k in postprocess if k not in _POSTPROCESS_ORDER)
    return " ".join(f"{k}={_param_value(postprocess[k])}" for k in keys)


def _record(row: PairResult) -> dict[str, Any]:
    compared = row.top_pair is not None and not row.is_top
    record: dict[str, Any] = {
        "behaviour": row.behaviour,
        "backbone": row.backbone,
        "head": row.head,
        "status": "ok" if row.ok else "failed",
        "error": row.error,
        "cv_pr_auc_mean": _number(row.cv_pr_auc_mean),
        "cv_pr_auc_se": _number(row.cv_pr_auc_se),
        "cv_pr_auc_std": _number(row.cv_pr_auc_std),
        "cv_pr_auc_pooled": _number(row.cv_pr_auc_pooled),
        "cv_n_folds": _integer(row.cv_n_folds),
        "top_pair": row.top_pair,
        "delta_top_mean": _number(row.delta_top_mean),
        "delta_top_se": _number(row.delta_top_se),
        "delta_top_n": _integer(row.delta_top_n) if compared else None,
        "indistinguishable_from_top": bool(row.indistinguishable) if compared else None,
        "n_trials": _integer(row.n_trials),
        "best_trial": _integer(row.best_trial),
        "test_pr_auc_mean": _number(row.test_pr_auc_mean),
        "test_pr_auc_low": _number(row.test_ci[0]),
        "test_pr_auc_high": _number(row.test_ci[1]),
        "test_ci_unit": row.test_ci_unit or None,
        "test_pr_auc_pooled": _number(row.test_pr_auc_pooled),
        "threshold": _number(row.threshold),
        "threshold_rule": row.threshold_rule or None,
        "postprocess": postprocess_text(row.postprocess) or None,
    }
    for column, source, key in _TEST_METRICS:
        record[column] = _number(getattr(row, source).get(key))
    record.update({
        "search_cpu_seconds": _number(row.search_cpu_seconds),
        "refit_cpu_seconds": _number(row.refit_cpu_seconds),
        "training_cpu_seconds": _number(row.training_cpu_seconds),
        "inference_fps": _number(row.inference_fps),
        "embedding_seconds_per_frame": _number(row.embedding_seconds_per_frame),
        # 0 is the "unknown" default; a failed pair has no model to count.
        "n_params": _integer(row.n_params) if (row.ok or row.n_params) else None,
        "final": row.final or None,
        "refit_run_id": row.refit_run_id or None,
        "params": json.dumps(row.params, sort_keys=True, default=json_default) if row.params else None,
    })
    return {column: record[column] for column in LEADERBOARD_COLUMNS}


def _ranked(rows: Sequence[PairResult]) -> list[PairResult]:
    """`rows` with the board's statistics filled in (`fill_statistics`, in place), in `sort_rows` order."""
    return sort_rows(fill_statistics(list(rows)))


def rows_to_records(rows: Sequence[PairResult]) -> list[dict[str, Any]]:
    """One dict per pair with exactly `LEADERBOARD_COLUMNS`, in `sort_rows` order; None where missing."""
    return [_record(row) for row in _ranked(rows)]


def _csv_text(rows: Sequence[PairResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(LEADERBOARD_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for record in rows_to_records(rows):
        # repr of a float round-trips exactly; None is an empty cell.
        writer.writerow({k: "" if v is None else (repr(v) if isinstance(v, float) else v) for k, v in record.items()})
    return buffer.getvalue()


def _atomic_write(path: Path, data: bytes) -> Path:
    """Write `data` beside `path`, then rename it over `path` (creating the folder first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, data)


def write_csv(rows: Sequence[PairResult], path: Path) -> Path:
    """The leaderboard CSV (`LEADERBOARD_COLUMNS`, one row per pair, empty cells where missing)."""
    return _atomic_write(Path(path), _csv_text(rows).encode("utf-8"))


# --------------------------------------------------------------------------- compact tables


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _truncate(text: str, limit: int) -> str:
    text = _one_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cv_cell(row: PairResult) -> str | None:
    """'0.812 ± 0.014 (5)': per-video mean ± standard error over folds (number of folds)."""
    mean = _number(row.cv_pr_auc_mean)
    if mean is None:
        return None
    se = _number(row.cv_pr_auc_se)
    text = f"{mean:.3f} ± {se:.3f}" if se is not None else f"{mean:.3f}"
    return f"{text} ({row.cv_n_folds})"


def _test_cell(row: PairResult) -> str | None:
    """'0.801 [0.700, 0.880]': per-video mean and its bootstrap interval ("[–]" without one)."""
    mean = _number(row.test_pr_auc_mean)
    if mean is None:
        return None
    low, high = (_number(v) for v in row.test_ci)
    interval = f"[{low:.3f}, {high:.3f}]" if low is not None and high is not None else f"[{NO_INTERVAL}]"
    return f"{mean:.3f} {interval}"


def _delta_cell(row: PairResult) -> str | None:
    """'-0.052 ± 0.013 ≈': paired difference to the top row ± SE, "≈" when not distinguishable."""
    if row.top_pair is None:
        return None
    if row.is_top:
        return TOP_MARK
    mean, se = _number(row.delta_top_mean), _number(row.delta_top_se)
    text = NO_INTERVAL if mean is None else f"{mean:+.3f}"
    if se is not None:
        text += f" ± {se:.3f}"
    return f"{text} {TIE_MARK}" if row.indistinguishable else text


def _cost_cell(row: PairResult, thousands: bool) -> str | None:
    search, refit = _number(row.search_cpu_seconds), _number(row.refit_cpu_seconds)
    if search is None and refit is None:
        return None
    spec = ",.0f" if thousands else ".0f"
    parts = ["?" if v is None else format(v, spec) for v in (search, refit)]
    return f"{parts[0]} + {parts[1]} s"


def _compact_cells(row: PairResult, thousands: bool) -> list[str | None]:
    """The compact metric cells of an ok row (after "pair"); None where missing."""

    def metric(source: str, key: str) -> str | None:
        value = _number(getattr(row, source).get(key))
        return None if value is None else f"{value:.3f}"

    def number(value: float) -> str | None:
        value = _number(value)
        return None if value is None else f"{value:.3f}"

    fps = _number(row.inference_fps)
    embedding = _number(row.embedding_seconds_per_frame)
    return [
        _cv_cell(row),
        _test_cell(row),
        _delta_cell(row),
        number(row.cv_pr_auc_pooled),
        number(row.test_pr_auc_pooled),
        str(row.n_trials) if row.n_trials else None,
        metric("test_raw", "f1"),
        metric("test_post", "f1"),
        metric("test_post", "bout_f1_iou10"),
        metric("test_post", "bout_f1_iou25"),
        metric("test_post", "bout_f1_iou50"),
        _cost_cell(row, thousands),
        None if fps is None else format(fps, ",.0f" if thousands else ".0f"),
        None if embedding is None else f"{1000 * embedding:.2f}",
        (format(row.n_params, "," if thousands else "d") if row.n_params else None),
    ]


def _several_behaviours(rows: Sequence[PairResult]) -> bool:
    return len({row.behaviour for row in rows}) > 1


def _interval_units(rows: Sequence[PairResult]) -> str:
    units = {row.test_ci_unit for row in rows if row.ok and row.test_ci_unit}
    if units == {UNIT_VIDEOS}:
        return "over the test videos"
    if units == {UNIT_BOUTS}:
        return "over the bouts of the one test video"
    return "over the test videos (over the bouts when there is one test video)"


def legend(rows: Sequence[PairResult]) -> str:
    """What the uncertainty columns mean, for the line under a table of `rows`."""
    return (f"PR-AUC per video: the mean over videos of each video's PR-AUC; pooled: all frames together. "
            f"CV: mean ± standard error over folds (number of folds). Test: mean [95% bootstrap interval "
            f"{_interval_units(rows)}; {NO_INTERVAL} with fewer than 2 to resample]. Δ: paired difference "
            f"of CV PR-AUC to the top row ({TOP_MARK}) over the folds both share, ± its standard error; "
            f"{TIE_MARK}: not distinguishable from the top row ({_TIE_RULE}, or fewer than 2 shared folds).")


def behaviour_heading(behaviour: str, rows: Sequence[PairResult], test_evaluations: int | None = None) -> str:
    """The line above a behaviour's terminal table; with `test_evaluations`, how often its test set was scored."""
    text = f"{behaviour}: {len(rows)} pair(s), sorted by CV PR-AUC; test = held-out videos"
    if test_evaluations is not None:
        text += f", test set evaluated {test_evaluations} time{'' if test_evaluations == 1 else 's'}"
    return text


def _md_escape(text: str) -> str:
    """Markdown table cell text: one line, HTML-special characters and pipes escaped."""
    return html.escape(_one_line(text), quote=False).replace("|", "\\|")


def markdown_table(rows: Sequence[PairResult]) -> str:
    """A GitHub markdown table of the compact columns, in `sort_rows` order.

    A failed pair shows "failed: <error>" in the first metric column and dashes elsewhere; a
    missing value is a dash.
    """
    rows = _ranked(rows)
    with_behaviour = _several_behaviours(rows)
    headers = (["behaviour"] if with_behaviour else []) + ["pair", *COMPACT_HEADERS]
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join(["---"] * (1 + with_behaviour) + ["---:"] * len(COMPACT_HEADERS)) + " |",
    ]
    for row in rows:
        if row.ok:
            cells = [_md_escape(c) if c is not None else "-" for c in _compact_cells(row, thousands=True)]
        else:
            error = _truncate(row.error or "unknown error", _MARKDOWN_ERROR_CHARS)
            cells = [f"failed: {_md_escape(error)}"] + ["-"] * (len(COMPACT_HEADERS) - 1)
        lead = ([_md_escape(row.behaviour)] if with_behaviour else []) + [_md_escape(row.pair)]
        lines.append("| " + " | ".join(lead + cells) + " |")
    return "\n".join(lines) + "\n"


def terminal_table(rows: Sequence[PairResult]) -> str:
    """The compact columns as an aligned plain-text table (`format_table`), in `sort_rows` order.

    Numbers have 3 decimals, costs read "812 + 40 s". Failed pairs leave the metric cells empty
    and show their error (cut to ~60 characters) in a last "error" column, which appears only when
    some pair failed, so the metric columns stay narrow. After a blank line, the `legend`.
    """
    rows = _ranked(rows)
    with_behaviour = _several_behaviours(rows)
    with_error = any(not row.ok for row in rows)
    headers = ["behaviour"] if with_behaviour else []
    headers += ["pair", *TERMINAL_HEADERS] + (["error"] if with_error else [])
    body = []
    for row in rows:
        lead = ([_one_line(row.behaviour)] if with_behaviour else []) + [_one_line(row.pair)]
        if row.ok:
            cells = [c or "" for c in _compact_cells(row, thousands=False)]
            tail = [""] if with_error else []
        else:
            cells = [""] * len(COMPACT_HEADERS)
            tail = ["failed: " + _truncate(row.error or "unknown error", _TERMINAL_ERROR_CHARS)]
        body.append(lead + cells + tail)
    return format_table(headers, body) + "\n\n" + textwrap.fill(legend(rows), width=_TERMINAL_LEGEND_WIDTH)


# --------------------------------------------------------------------------- the report


def _file_stem(name: str) -> str:
    """A behaviour name as a safe file-name part."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "behaviour"


def _anchor(index: int, name: str) -> str:
    return f"b{index}-" + re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-").lower()


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1400px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; font-size: 0.9em;
          color: #444; }
dl.meta dt { font-weight: bold; }
dl.meta dd { margin: 0; }
nav ul { padding-left: 1.2em; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; }
th { background: #f4f4f4; text-align: center; }
td { text-align: right; white-space: nowrap; }
td.pair, td.behaviour { text-align: left; font-family: monospace; }
td.failed { text-align: left; color: #a00; white-space: normal; }
tbody tr:nth-child(even) { background: #fafafa; }
tr.top td.pair { font-weight: bold; }
tr.tie td.delta { color: #1a5fb4; font-weight: bold; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
p.note, p.legend { font-size: 0.85em; color: #555; }
p.legend { margin-top: -0.5em; max-width: 1100px; }
.nowrap { white-space: nowrap; }
"""

_FIGURE_CAPTIONS = {
    "confusion": "Test-set confusion matrices of the post-processed labels.",
    "pr_curves": "Test-set precision-recall curves of all test frames pooled (AP = the pooled test PR-AUC); "
                 "markers are the operating points at each pair's threshold.",
    "cost": "CV PR-AUC against training CPU time; the Pareto front is the step line.",
    "per_video": "PR-AUC per video: CV validation videos, then test videos.",
    "ethogram": "Annotation and post-processed predictions over one test video.",
}


_RANKING_NOTE = ("Pairs are ranked by CV PR-AUC per video (the mean over folds of the held-out video's PR-AUC), "
                 "never by a test score; the test columns come from each pair's final model (--final) scored once "
                 "on the held-out test videos.")


def _evaluations_note(count: int) -> str:
    return (f"Test set evaluated {count} time{'' if count == 1 else 's'} in this tracking store "
            "(each finished final-model run scores the test videos once).")


def _html_table(rows: Sequence[PairResult]) -> str:
    esc = html.escape
    headers = ["pair", *COMPACT_HEADERS]
    out = ['<div class="table-wrap"><table>', "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers)
           + "</tr></thead>", "<tbody>"]
    rows = _ranked(rows)
    for row in rows:
        cells = [f'<td class="pair">{esc(row.pair)}</td>']
        if row.ok:
            cells += [('<td class="delta">' if i == _DELTA_COLUMN else "<td>") + (esc(c) if c is not None else "-")
                      + "</td>" for i, c in enumerate(_compact_cells(row, thousands=True))]
        else:
            error = _truncate(row.error or "unknown error", _MARKDOWN_ERROR_CHARS)
            cells.append(f'<td class="failed" colspan="{len(COMPACT_HEADERS)}">failed: {esc(error)}</td>')
        kind = "top" if row.is_top else "tie" if row.ok and row.top_pair and row.indistinguishable else ""
        out.append((f'<tr class="{kind}">' if kind else "<tr>") + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    rule = esc(_TIE_RULE)
    text = esc(legend(rows)).replace(rule, '<span class="nowrap">' + rule + "</span>")
    out.append(f'<p class="legend">{text}</p>')
    return "\n".join(out)


def _html_page(
    title: str,
    meta: dict[str, str],
    sections: list[tuple[str, str, list[PairResult], dict[str, bytes]]],
    test_evaluations: Mapping[str, int] | None = None,
) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if meta:
        parts.append('<dl class="meta">')
        parts += [f"<dt>{esc(str(k))}</dt><dd>{esc(str(v))}</dd>" for k, v in meta.items()]
        parts.append("</dl>")
    parts.append(f'<p class="note">{esc(_RANKING_NOTE)}</p>')
    if len(sections) > 1:
        parts.append("<nav><ul>")
        parts += [f'<li><a href="#{anchor}">{esc(name)}</a></li>' for name, anchor, _, _ in sections]
        parts.append("</ul></nav>")
    for name, anchor, rows, figures in sections:
        parts.append(f'<section id="{anchor}">')
        parts.append(f"<h2>{esc(name)}</h2>")
        if test_evaluations and name in test_evaluations:
            parts.append(f'<p class="note">{esc(_evaluations_note(test_evaluations[name]))}</p>')
        parts.append(_html_table(rows))
        for stem, png in figures.items():
            data = base64.b64encode(png).decode("ascii")
            alt = esc(f"{name}: {stem}")
            caption = esc(_FIGURE_CAPTIONS.get(stem, stem))
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
                         f"<figcaption>{caption}</figcaption></figure>")
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _markdown_page(
    title: str,
    meta: dict[str, str],
    sections: list[tuple[str, list[PairResult], dict[str, Path]]],
    test_evaluations: Mapping[str, int] | None = None,
) -> str:
    lines = [f"# {_md_escape(title)}", ""]
    if meta:
        lines += [f"- **{_md_escape(str(k))}**: {_md_escape(str(v))}" for k, v in meta.items()]
        lines.append("")
    lines += [_md_escape(_RANKING_NOTE), ""]
    for name, rows, images in sections:
        lines += [f"## {_md_escape(name)}", ""]
        if test_evaluations and name in test_evaluations:
            lines += [_md_escape(_evaluations_note(test_evaluations[name])), ""]
        lines += [markdown_table(rows), _md_escape(legend(rows)), ""]
        for stem, path in images.items():
            lines += [f"![{_md_escape(name)} {stem}]({quote(path.name)})", ""]
    return "\n".join(lines)


def write_report(
    rows_by_behaviour: dict[str, list[PairResult]],
    out_dir: Path,
    title: str = "mbr-bench leaderboard",
    meta: dict[str, str] | None = None,
    test_evaluations: Mapping[str, int] | None = None,
) -> dict[str, Path]:
    """Write the leaderboard into `out_dir` and return the paths written.

    Files: `leaderboard.csv` (every pair of every behaviour), `leaderboard.md` (a section per
    behaviour: its table and links to its figures), `<behaviour>_<stem>.png` per figure of
    `behaviour_figures`, and `leaderboard.html`, one self-contained page (inline CSS, figures
    embedded as data URIs). The behaviour part of a PNG name keeps only letters, digits, '.', '_'
    and '-'. `test_evaluations` (behaviour -> how many times its test set was scored) is stated in
    each behaviour's section of the Markdown and HTML pages.

    Returns:
        {"csv": ..., "markdown": ..., "html": ..., "<behaviour>_<stem>": path of each PNG}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    paths: dict[str, Path] = {}
    all_rows: list[PairResult] = []
    html_sections = []
    md_sections = []
    used_stems: set[str] = set()
    for index, (behaviour, rows) in enumerate(rows_by_behaviour.items()):
        rows = _ranked(rows)
        all_rows += rows
        stem = _file_stem(behaviour)
        base, n = stem, 2
        while stem in used_stems:  # two names that differ only in unsafe characters
            stem, n = f"{base}_{n}", n + 1
        used_stems.add(stem)
        figures = behaviour_figures(rows)
        images: dict[str, Path] = {}
        for figure_stem, png in figures.items():
            key = f"{stem}_{figure_stem}"
            images[figure_stem] = paths[key] = _atomic_write(out_dir / f"{key}.png", png)
        html_sections.append((behaviour, _anchor(index, behaviour), rows, figures))
        md_sections.append((behaviour, rows, images))
    paths["csv"] = write_csv(all_rows, out_dir / "leaderboard.csv")
    paths["markdown"] = _atomic_write(out_dir / "leaderboard.md",
                                      _markdown_page(title, meta, md_sections, test_evaluations).encode("utf-8"))
    paths["html"] = _atomic_write(out_dir / "leaderboard.html",
                                  _html_page(title, meta, html_sections, test_evaluations).encode("utf-8"))
    return {"csv": paths.pop("csv"), "markdown": paths.pop("markdown"), "html": paths.pop("html"), **paths}
