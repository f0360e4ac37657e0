"""The `strg` entry point: help, version, unknown commands, user errors without tracebacks."""

import subprocess
import sys

import pytest

from strg.cli import COMMANDS, main


def test_every_command_module_imports_and_has_its_functions():
    import importlib

    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.run), name


def test_help_version_and_unknown(capsys):
    assert main([]) == 0
    assert "info" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and "strg" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2


def test_console_script_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "strg.cli", "info", "--list"],
                         capture_output=True, text=True, check=True)
    assert "nl_joint_gcn_r101" in out.stdout.split()


def test_user_error_is_one_line_without_traceback():
    out = subprocess.run([sys.executable, "-m", "strg.cli", "train", "/nonexistent/config.yaml"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "/nonexistent/config.yaml" in out.stderr
