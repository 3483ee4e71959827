import subprocess
import sys

import pytest

from mbr_bench.benchmark.cli import main


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
