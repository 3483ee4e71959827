import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from mbr_bench.benchmark.cli import build_parser, main
from mbr_bench.benchmark.workers import HEARTBEAT_SECONDS


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from mbr_bench.benchmark.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'cv2', 'pandas', 'mlflow', 'optuna') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    for command in ("synth", "dataset", "embed", "backbones"):
        assert command in result.stdout


def test_console_script_is_installed():
    import shutil
    from pathlib import Path

    script = shutil.which("mbr-bench") or str(Path(sys.executable).with_name("mbr-bench"))
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("mbr-bench ")


def test_no_bare_top_level_packages_are_installed(tmp_path):
    # Run from an empty folder so that the checkout itself is not on sys.path.
    code = (
        "import importlib.util as u\n"
        "print([n for n in ('mbr_bench.benchmark', 'mbr_bench.tracking', 'mbr_bench.search_spaces') if u.find_spec(n)])\n"
        "print([n for n in ('benchmark', 'tracking', 'search_spaces') if u.find_spec(n)])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    namespaced, bare = result.stdout.splitlines()
    assert namespaced == "['mbr_bench.benchmark', 'mbr_bench.tracking', 'mbr_bench.search_spaces']"
    assert bare == "[]"


def test_backbones_lists_reference_dims(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "resnet50v2" in out and "2048" in out and "1536" in out and "1280" in out and "pose" in out


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["embed", "--dataset"])
    assert info.value.code == 2


# Every (sub)command's arguments as (flag or positional name, dest, default, required), -h left out.
# A guard: reorganising the parser must not add, drop, rename or re-default any of them.
EXPECTED_ARGUMENTS = {
    "": {("--version", "version", argparse.SUPPRESS, False)},
    "synth": {
        ("out", "out", None, True),
        ("--videos", "videos", 6, False),
        ("--frames", "frames", 1500, False),
        ("--test", "test", 2, False),
        ("--seed", "seed", 0, False),
        ("--pose-format", "pose_format", "dlc", False),
    },
    "dataset": set(),
    "dataset check": {("path", "path", None, True), ("--json", "json", False, False)},
    "dataset cut": {
        ("--pose", "pose", None, True),
        ("--labels", "labels", None, True),
        ("--fps", "fps", None, True),
        ("--pieces", "pieces", None, True),
        ("--test-pieces", "test_pieces", None, True),
        ("--out", "out", None, True),
        ("--centre", "centre", None, False),
        ("--heading", "heading", None, False),
    },
    "embed": {
        ("--dataset", "dataset", None, True),
        ("--backbone", "backbone", None, True),
        ("--weights", "weights", None, False),
        ("--batch-size", "batch_size", 32, False),
        ("--videos", "videos", None, False),
        ("--crop-mode", "crop_mode", None, False),
        ("--crop-size", "crop_size", None, False),
        ("--workdir", "workdir", None, False),
        ("--cache-dir", "cache_dir", None, False),
        ("--json", "json", False, False),
        ("--no-progress", "no_progress", False, False),
    },
    "run": {
        ("--study", "study", None, True),
        ("--dataset", "dataset", None, False),
        ("--backbones", "backbones", None, False),
        ("--heads", "heads", None, False),
        ("--n-trials", "n_trials", None, False),
        ("--timeout", "timeout", None, False),
        ("--sampler", "sampler", "tpe", False),
        ("--protocol", "protocol", "mean_curve", False),
        ("--search-space", "search_space", None, False),
        ("--workdir", "workdir", None, False),
        ("--storage", "storage", None, False),
        ("--tracking-uri", "tracking_uri", None, False),
        ("--weights", "weights", None, False),
        ("--seed", "seed", 0, False),
        ("--batch-size", "batch_size", 32, False),
        ("--cache-dir", "cache_dir", None, False),
        ("--heartbeat", "heartbeat", HEARTBEAT_SECONDS, False),
        ("--allow-empty-folds", "allow_empty_folds", False, False),
        ("--yes", "yes", False, False),
        ("--allow-cpu-finetune", "allow_cpu_finetune", False, False),
        ("--no-progress", "no_progress", False, False),
    },
    "estimate": {
        ("--study", "study", None, True),
        ("--dataset", "dataset", None, False),
        ("--backbones", "backbones", None, False),
        ("--heads", "heads", None, False),
        ("--n-trials", "n_trials", None, False),
        ("--timeout", "timeout", None, False),
        ("--sampler", "sampler", "tpe", False),
        ("--search-space", "search_space", None, False),
        ("--weights", "weights", None, False),
        ("--workdir", "workdir", None, False),
        ("--cache-dir", "cache_dir", None, False),
        ("--no-progress", "no_progress", False, False),
    },
    "leaderboard": {
        ("--cache-dir", "cache_dir", None, False),
        ("--study", "study", None, True),
        ("--workdir", "workdir", None, False),
        ("--tracking-uri", "tracking_uri", None, False),
        ("--dataset", "dataset", None, False),
        ("--out", "out", None, False),
        ("--threshold", "threshold", "max_f1", False),
        ("--seed", "seed", 0, False),
        ("--final", "final", "refit", False),
        ("--refit-seeds", "refit_seeds", 3, False),
        ("--no-refit", "no_refit", False, False),
        ("--no-register", "no_register", False, False),
        ("--ensemble", "ensemble", None, False),
        ("--no-two-stream", "no_two_stream", False, False),
        ("--no-progress", "no_progress", False, False),
    },
    "predict": {
        ("--cache-dir", "cache_dir", None, False),
        ("videos", "videos", None, True),
        ("--model", "model", None, True),
        ("--pose", "pose", None, False),
        ("--out", "out", Path("predictions"), False),
        ("--exclusive", "exclusive", False, False),
        ("--workdir", "workdir", None, False),
        ("--tracking-uri", "tracking_uri", None, False),
        ("--batch-size", "batch_size", 32, False),
        ("--no-progress", "no_progress", False, False),
    },
    "ui": {
        ("--workdir", "workdir", None, False),
        ("--tracking-uri", "tracking_uri", None, False),
        ("--host", "host", "127.0.0.1", False),
        ("--port", "port", 5000, False),
    },
    "dashboard": {
        ("--workdir", "workdir", None, False),
        ("--storage", "storage", None, False),
        ("--host", "host", "127.0.0.1", False),
        ("--port", "port", 8080, False),
    },
    "serve": {
        ("--workdir", "workdir", None, False),
        ("--backend-store-uri", "backend_store_uri", None, False),
        ("--artifacts-destination", "artifacts_destination", None, False),
        ("--host", "host", "127.0.0.1", False),
        ("--port", "port", 5000, False),
        ("--workers", "workers", None, False),
        ("--allowed-hosts", "allowed_hosts", None, False),
    },
    "backbones": set(),
}

WORKDIR_DEFAULT = "(default: $MBR_BENCH_WORKDIR or ./mbr-work)"
TRACKING_URI_HELP = "MLflow tracking URI (default: sqlite:///WORKDIR/mlflow.db)"
# Help of the options several subcommands share: each keeps its wording.
EXPECTED_SHARED_HELP = {
    **{(command, "--workdir"): f"work directory {WORKDIR_DEFAULT}"
       for command in ("embed", "run", "estimate", "leaderboard", "ui", "serve")},
    ("predict", "--workdir"): f"work directory: embedding cache, downloaded models {WORKDIR_DEFAULT}",
    **{(command, "--tracking-uri"): TRACKING_URI_HELP for command in ("run", "leaderboard", "predict", "ui")},
    ("embed", "--batch-size"): "frames per forward pass (default: 32)",
    ("run", "--batch-size"): "embedding batch size (default: 32)",
    ("predict", "--batch-size"): "embedding batch size (default: 32)",
    ("embed", "--no-progress"): "no progress bar",
    ("predict", "--no-progress"): "no progress bar",
    ("run", "--no-progress"): "no progress lines",
    ("estimate", "--no-progress"): "no progress lines",
    ("leaderboard", "--no-progress"): "no progress lines",
    ("synth", "--seed"): "random seed (default: 0)",
    ("run", "--seed"): "sampler and training seed (default: 0)",
    ("leaderboard", "--seed"): "refit training seed (default: 0)",
    ("ui", "--port"): "port (default: 5000)",
    ("serve", "--port"): "port (default: 5000)",
    **{(command, "--cache-dir"): "embedding cache, may be shared by workers (default: $MBR_BENCH_CACHE_DIR or WORKDIR/cache)"
       for command in ("embed", "run", "estimate", "leaderboard", "predict")},
}

EXPECTED_HANDLERS = {
    "synth": "cmd_synth", "dataset check": "cmd_dataset_check", "dataset cut": "cmd_dataset_cut",
    "embed": "cmd_embed", "run": "cmd_run", "estimate": "cmd_estimate",
    "leaderboard": "cmd_leaderboard", "predict": "cmd_predict", "ui": "cmd_ui", "dashboard": "cmd_dashboard", "serve": "cmd_serve",
    "backbones": "cmd_backbones",
}


def _commands(parser: argparse.ArgumentParser, path: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser by its words ("" for the top level, "dataset check", ...)."""
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_commands(sub, f"{path} {name}".strip()))
    return found


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def test_every_subcommand_keeps_its_arguments():
    commands = _commands(build_parser())
    actual = {
        path: {(" ".join(a.option_strings) or a.dest, a.dest, a.default, a.required) for a in _arguments(parser)}
        for path, parser in commands.items()
    }
    assert actual == EXPECTED_ARGUMENTS
    for path, parser in commands.items():
        flags = [" ".join(a.option_strings) or a.dest for a in _arguments(parser)]
        assert len(flags) == len(set(flags)), f"{path}: an option is declared twice"


def test_shared_options_keep_their_help():
    commands = _commands(build_parser())
    actual = {
        (path, flag): action.help
        for path, flag in EXPECTED_SHARED_HELP
        for action in _arguments(commands[path]) if flag in action.option_strings
    }
    assert actual == EXPECTED_SHARED_HELP
    assert all(a.help for parser in commands.values() for a in _arguments(parser)), "an option has no help"


def test_every_subcommand_has_its_handler():
    commands = _commands(build_parser())
    handlers = {path: parser.get_default("func") for path, parser in commands.items()}
    assert {path: f.__name__ for path, f in handlers.items() if f is not None} == EXPECTED_HANDLERS
