"""tracking/schema.py: every MLflow name is spelled there once, and its records read what writers write."""

import ast
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from mbr_bench.tracking import schema

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("benchmark", "tracking", "core", "search_spaces")
# What an MLflow tag, metric or artifact name looks like when it is spelled out.
NAME_PREFIXES = ("mbr.", "cv/", "compute/", "test/", "test_post/", "decision/", "figures/", "folds/", "predictions/")
FOLD_NAME = re.compile(r"fold(\d+|\{\})/")  # "fold3/pr_auc", f"fold{k}/pr_auc"


def string_literals(path: Path):
    """(line, text) of every string constant in a module, docstrings excluded; an f-string is one text
    with ``{}`` for each value it formats."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {id(node.body[0].value) for node in ast.walk(tree)
               if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
               and node.body and isinstance(node.body[0], ast.Expr)
               and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skipped.update(id(part) for part in node.values)
            yield node.lineno, "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            yield node.lineno, node.value


def test_mlflow_names_are_spelled_only_in_the_schema():
    found = []
    for folder in PACKAGE_DIRS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if path == REPO_ROOT / "tracking" / "schema.py":
                continue
            for line, text in string_literals(path):
                if text.startswith(NAME_PREFIXES) or FOLD_NAME.match(text):
                    found.append(f"{path.relative_to(REPO_ROOT)}:{line}: {text!r}")
    assert not found, "MLflow names outside tracking/schema.py:\n" + "\n".join(found)


def test_each_name_is_defined_once_in_the_schema():
    values = [value for name, value in vars(schema).items()
              if name.isupper() and isinstance(value, str) and value.startswith(("mbr.", "mlflow."))]
    assert len(values) == len(set(values)), sorted(v for v in values if values.count(v) > 1)


def test_the_literal_scan_sees_a_name_written_elsewhere(tmp_path):
    """The scan above is not blind: a module that spells a tag itself is caught."""
    module = tmp_path / "writer.py"
    module.write_text('"""Doc mentioning mbr.kind is fine."""\nTAG = "mbr.kind"\nKEY = f"cv/{1}"\nFOLD = f"fold{2}/x"\n')
    texts = [text for _, text in string_literals(module)]
    assert "mbr.kind" in texts and "cv/{}" in texts and any(FOLD_NAME.match(text) for text in texts)
    assert not any(text.startswith("Doc") for text in texts)


def fake_run(run_id="r1", metrics=None, tags=None, params=None):
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id),
                           data=SimpleNamespace(metrics=metrics or {}, tags=tags or {}, params=params or {}))


def test_trial_record_reads_folds_in_fold_order():
    metrics = {schema.fold_metric(k, "pr_auc"): 0.5 + k / 100 for k in (10, 2, 0)}
    metrics.update({schema.fold_metric(k, "epochs"): 3 + k for k in (10, 2, 0)})
    metrics.update({schema.fold_metric(0, "epochs_run"): 99, schema.CV_PR_AUC_MEAN: 0.61, schema.CV_PR_AUC_STD: 0.02,
                    schema.CV_N_FOLDS: 3, schema.COMPUTE + "cpu_seconds": 12.5})
    tags = {schema.TAG_TRIAL: "4", schema.TAG_STATE: schema.STATE_COMPLETE,
            schema.fold_video_tag(0): "a", schema.fold_video_tag(2): "b"}
    record = schema.TrialRecord.from_run(fake_run(metrics=metrics, tags=tags, params={"units": "64"}))
    assert record.trial == 4 and record.complete
    assert list(record.fold_scores) == ["a", "b", "fold 10"]  # numeric fold order, missing video named
    assert record.fold_epochs == [3, 5, 13]  # epochs_run is not an epoch count to refit with
    assert record.cv_pr_auc_mean == 0.61 and record.n_folds == 3 and record.cpu_seconds == 12.5
    assert record.params == {"units": "64"}


def test_trial_record_without_a_score_is_not_complete():
    record = schema.TrialRecord.from_run(fake_run(tags={schema.TAG_STATE: schema.STATE_COMPLETE},
                                                  metrics={schema.COMPUTE + "train_seconds": 3.0}))
    assert not record.complete and math.isnan(record.cv_pr_auc_mean)
    assert record.cpu_seconds == 3.0  # wall seconds stand in when CPU seconds were not logged


def test_refit_record_splits_prefixed_names():
    metrics = {**schema.with_prefix(schema.TEST, {"pr_auc": 0.8, "f1": 0.7}),
               **schema.with_prefix(schema.TEST_POST, {"f1": 0.75}),
               **schema.with_prefix(schema.COMPUTE, {"n_params": 1000.0}),
               schema.DECISION_THRESHOLD: 0.42}
    params = {**schema.with_prefix(schema.PARAM_POSTPROCESS, {"closing": "3", "min_bout": "5"}),
              **schema.with_prefix(schema.PARAM_HEAD, {"units": "64"}), "epochs": "7"}
    record = schema.RefitRecord.from_run(fake_run(metrics=metrics, params=params,
                                                  tags={schema.TAG_RULE: "max_f1"}))
    assert record.test_raw == {"pr_auc": 0.8, "f1": 0.7} and record.test_post == {"f1": 0.75}
    assert record.postprocess == {"closing": 3, "min_bout": 5} and record.head_params == {"units": "64"}
    assert record.threshold == 0.42 and record.threshold_rule == "max_f1" and record.compute == {"n_params": 1000.0}


@pytest.mark.parametrize("key, parsed", [("fold3/pr_auc", (3, "pr_auc")), ("fold12/epochs", (12, "epochs")),
                                         ("cv/pr_auc", None), ("folds/x", None)])
def test_parse_fold_metric(key, parsed):
    assert schema.parse_fold_metric(key) == parsed
