"""Write the Markdown performance report from a pytest-benchmark JSON file alone.

Usage: python tests/bench/report.py bench-results/benchmark.json bench-results/report.md

Each benchmark's extra_info carries target, ratio, comparison (">=" or "<="), target_value and
note (see tests/bench/conftest.py); benchmarks without a ratio are listed as not measured. A
benchmark may add `report_section` (Markdown: a figure, a table) shown below the table, and the
cost model (tests/bench/cost_model.py) adds its projection from the measured figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path: find cost_model
from cost_model import cost_section  # noqa: E402


def is_met(ratio: float | None, comparison: str, target_value: float) -> bool | None:
    """True/False against the target; None when nothing was measured."""
    if ratio is None:
        return None
    if comparison == ">=":
        return ratio >= target_value
    if comparison == "<=":
        return ratio <= target_value
    raise ValueError(f"comparison must be '>=' or '<=', got {comparison!r}")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per benchmark, sorted by target name."""
    out = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        ratio = info.get("ratio")
        comparison = info.get("comparison", "<=")
        target_value = info.get("target_value")
        met = is_met(ratio, comparison, target_value) if target_value is not None else None
        out.append({
            "target": info.get("target", bench.get("name", "?")),
            "ratio": ratio,
            "comparison": comparison,
            "target_value": target_value,
            "met": met,
            "note": info.get("note", ""),
        })
    return sorted(out, key=lambda row: str(row["target"]))


def table(data: dict[str, Any]) -> str:
    lines = ["| Target | Measured ratio | Target value | Met | Note |", "|---|---|---|---|---|"]
    for row in rows(data):
        ratio = "not measured" if row["ratio"] is None else f"{row['ratio']:.4g}"
        target = "" if row["target_value"] is None else f"{row['comparison']} {row['target_value']:g}"
        met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
        lines.append(f"| {_cell(row['target'])} | {ratio} | {target} | {met} | {_cell(row['note'])} |")
    return "\n".join(lines)


def render(data: dict[str, Any]) -> str:
    machine = data.get("machine_info", {})
    versions = machine.get("versions", {})
    all_rows = rows(data)
    met = sum(1 for row in all_rows if row["met"])
    lines = [
        "# mbr-bench performance report",
        "",
        f"- Date: {data.get('datetime', 'unknown')}",
        f"- CPU: {machine.get('cpu_model') or machine.get('cpu', {}).get('brand_raw', 'unknown')}",
        f"- Cores: {machine.get('cpu_count', 'unknown')} (usable: {machine.get('cpu_affinity', 'unknown')})",
        f"- RAM: {machine.get('mem_total', 'unknown')}",
        f"- Load average at start: {machine.get('loadavg', 'unknown')}",
        f"- Python: {machine.get('python_version', 'unknown')}",
        f"- TensorFlow: {versions.get('tensorflow', 'unknown')}, Keras: {versions.get('keras', 'unknown')}, "
        f"NumPy: {versions.get('numpy', 'unknown')}, OpenCV: {versions.get('cv2', 'unknown')}",
        "",
        "Every figure is a ratio of two timings (or peak memories) taken side by side in the same run, "
        "so that machine load cancels out; targets are goals, not assertions.",
        "",
        f"**{met} of {len(all_rows)} targets met.**",
        "",
        table(data),
        "",
    ]
    for bench in sorted(data.get("benchmarks", []), key=lambda b: str(b.get("extra_info", {}).get("target", ""))):
        section = bench.get("extra_info", {}).get("report_section")
        if section:
            lines += [section.rstrip(), ""]
    cost = cost_section(data)
    if cost:
        lines += [cost.rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: report.py BENCHMARK_JSON REPORT_MD", file=sys.stderr)
        return 2
    source, target = Path(argv[0]), Path(argv[1])
    data = json.loads(source.read_text())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(data))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
