"""The report writer, from a hand-written pytest-benchmark JSON (an ordinary test, run by `make test`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


def _report_module():
    spec = importlib.util.spec_from_file_location("bench_report", Path(__file__).with_name("report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DATA = {
    "datetime": "2025-01-02T03:04:05",
    "machine_info": {"cpu_model": "Test CPU 9000", "cpu_count": 2, "cpu_affinity": 2, "mem_total": "8000000 kB",
                     "python_version": "3.11.9", "versions": {"tensorflow": "2.21.0", "keras": "3.15.1"}},
    "benchmarks": [
        {"name": "test_b", "extra_info": {"target": "2. cache", "ratio": 0.001, "comparison": "<=",
                                          "target_value": 0.02, "note": "fast | cheap"}},
        {"name": "test_a", "extra_info": {"target": "1. pipeline", "ratio": 0.8, "comparison": ">=",
                                          "target_value": 0.85, "note": "decode-bound"}},
        {"name": "test_c", "extra_info": {"target": "4. head", "ratio": 1.1, "comparison": "<=",
                                          "target_value": 1.1, "note": ""}},
    ],
}


def test_table_rows_and_met_flags(tmp_path):
    report = _report_module()
    source = tmp_path / "benchmark.json"
    source.write_text(json.dumps(DATA))
    out = tmp_path / "sub" / "report.md"
    assert report.main([str(source), str(out)]) == 0
    text = out.read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table == [
        "| Target | Measured ratio | Target value | Met | Note |",
        "|---|---|---|---|---|",
        "| 1. pipeline | 0.8 | >= 0.85 | **no** | decode-bound |",
        "| 2. cache | 0.001 | <= 0.02 | yes | fast \\| cheap |",
        "| 4. head | 1.1 | <= 1.1 | yes |  |",
    ]
    assert "Test CPU 9000" in text and "TensorFlow: 2.21.0" in text and "2025-01-02" in text
    assert "**2 of 3 targets met.**" in text


def test_is_met_and_missing_ratio():
    report = _report_module()
    assert report.is_met(0.9, ">=", 0.85) is True
    assert report.is_met(1.2, "<=", 1.1) is False
    assert report.is_met(None, "<=", 1.1) is None
    with pytest.raises(ValueError):
        report.is_met(1.0, "==", 1.0)
    data = {"benchmarks": [{"name": "test_x", "extra_info": {}}]}
    assert "| test_x | not measured |  | n/a |  |" in report.table(data)


def test_usage_error(capsys):
    assert _report_module().main(["only-one"]) == 2


def test_docs_page_starts_with_the_generated_header_and_holds_the_table(tmp_path):
    report = _report_module()
    source = tmp_path / "bench-results" / "benchmark.json"
    source.parent.mkdir()
    source.write_text(json.dumps({**DATA, "commit_info": {"id": "0123456789abcdef", "dirty": False}}))
    out, docs = tmp_path / "bench-results" / "report.md", tmp_path / "docs" / "performance.md"
    assert report.main([str(source), str(out), "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert text.splitlines()[0] == report.GENERATED_HEADER
    assert "make bench" in report.GENERATED_HEADER and "Do not edit by hand" in report.GENERATED_HEADER
    # The same table as the report's, and the run it shows.
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table == [line for line in out.read_text().splitlines() if line.startswith("|")]
    assert "| 1. pipeline | 0.8 | >= 0.85 | **no** | decode-bound |" in table
    assert "**Figures of the run of 2025-01-02T03:04:05, on Test CPU 9000 (2 usable cores), at commit 0123456.**" in text
    assert "**2 of 3 targets met.**" in text
    assert text.count("\n# ") == 1  # one page title; the report's sections sit below it


def test_docs_page_without_run_details_and_its_figures(tmp_path):
    report = _report_module()
    section = "## Search\n\n![curves](search_efficiency.png)\n\n![missing](other.png)\n"
    data = {"benchmarks": [{"name": "test_s", "extra_info": {"target": "5. search", "ratio": 0.2, "comparison": "<=",
                                                             "target_value": 0.3, "report_section": section}}]}
    text = report.render_docs(data)
    assert text.startswith(report.GENERATED_HEADER + "\n")
    assert "Figures of the run" not in text  # no date, machine or commit in the JSON: nothing invented
    assert "| 5. search | 0.2 | <= 0.3 | yes |  |" in text
    results, docs = tmp_path / "bench-results", tmp_path / "docs"
    results.mkdir()
    (results / "search_efficiency.png").write_bytes(b"png")
    docs.mkdir()
    placed = report.copy_figures(text, results, docs)
    assert (docs / "search_efficiency.png").read_bytes() == b"png"
    assert "![curves](search_efficiency.png)" in placed
    assert "other.png" in placed and "![missing](other.png)" not in placed  # no broken image link


def test_docs_option_needs_a_path(tmp_path, capsys):
    assert _report_module().main([str(tmp_path / "a.json"), str(tmp_path / "b.md"), "--docs"]) == 2
    assert "--docs" in capsys.readouterr().err
