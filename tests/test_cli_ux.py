"""Every `lorsp` subcommand, found by introspecting the parser: help with an example, `--json`,
and user errors as one line on stderr with no traceback.

A new subcommand is picked up automatically; one that takes no input file at all must be added to
``NO_INPUT_FILE`` (the test listing them fails until it is), so that nobody forgets its error path.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorsp_app.cli import build_parser
from lorsp_app.cli import main as cli_main

#: Options that name a file the command reads (used when a command has no positional input).
INPUT_OPTIONS = ("--config", "--profiles-file")
#: Commands that read no file the user names.
NO_INPUT_FILE = {"lava-check", "list", "demo"}


def _subcommands() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action


COMMANDS = sorted(_subcommands()[1].choices)


def _subparser(name: str) -> argparse.ArgumentParser:
    return _subcommands()[1].choices[name]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``lorsp argv`` in this process: (exit status, stdout, stderr); argparse's exits included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli_main(argv)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
    return status, out.getvalue(), err.getvalue()


def assert_one_line_error(command: str, status: int, stderr: str, *mentions: str) -> None:
    assert status != 0, f"lorsp {command} succeeded: {stderr!r}"
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"lorsp {command}: expected one line on stderr, got {stderr!r}"
    assert lines[0].startswith(f"lorsp {command}: error: "), lines[0]
    for text in mentions:
        assert text in lines[0], (text, lines[0])


def _positionals(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in sub._actions if not a.option_strings]


def _required_options(sub: argparse.ArgumentParser, tmp_path: Path) -> list[str]:
    argv = []
    for action in sub._actions:
        if action.option_strings and action.required:
            argv += [action.option_strings[0], str(tmp_path / f"{action.dest}.out")]
    return argv


def missing_input_argv(name: str, tmp_path: Path) -> list[str] | None:
    """An invocation of ``name`` whose input file does not exist, or ``None`` if it reads none."""
    sub = _subparser(name)
    missing = str(tmp_path / "does-not-exist")
    argv = [name, *(missing for _ in _positionals(sub)), *_required_options(sub, tmp_path)]
    if not _positionals(sub):
        options = [o for a in sub._actions for o in a.option_strings if o in INPUT_OPTIONS]
        if not options:
            return None
        argv += [options[0], missing]
    return argv


def test_the_commands_without_an_input_file_are_the_known_ones(tmp_path):
    without = {name for name in COMMANDS if missing_input_argv(name, tmp_path) is None}
    assert without == NO_INPUT_FILE


def test_top_level_help_lists_every_command_with_a_one_line_summary(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    summaries = {a.dest: a.help for a in _subcommands()[1]._choices_actions}
    assert sorted(summaries) == COMMANDS
    for name, summary in summaries.items():
        assert summary and "\n" not in summary, name
        assert f"{name} {' '.join(summary.split())}" in text, name


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text.lower()
    assert f"lorsp {command} " in text.split("example", 1)[1], "the example runs the command"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_writes_json(command):
    assert "--json" in {o for a in _subparser(command)._actions for o in a.option_strings}


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - NO_INPUT_FILE))
def test_missing_input_file_is_a_one_line_error(command, tmp_path):
    argv = missing_input_argv(command, tmp_path)
    status, _, stderr = run_cli(argv)
    assert_one_line_error(command, status, stderr, "does-not-exist")


@pytest.mark.parametrize("command", COMMANDS)
def test_json_into_an_impossible_folder_fails_before_any_work(command, tmp_path):
    """``--json`` goes under a regular file: refused up front, not after minutes of work."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    sub = _subparser(command)
    argv = [
        command,
        *(str(tmp_path / "input") for _ in _positionals(sub)),
        *_required_options(sub, tmp_path),
        "--json",
        str(blocker / "report.json"),
    ]
    status, _, stderr = run_cli(argv)
    assert_one_line_error(command, status, stderr, "--json", "a-file")


#: Bad values a user may type: each must be one line naming the problem, before any long work.
BAD_VALUES = [
    ("cosim", ["run", "--images", "0"], "--images"),
    ("cosim", ["run", "--steps", "0"], "--steps"),
    ("energy", ["run", "--steps", "-3"], "--steps"),
    ("energy", ["run", "--seed", "-1"], "--seed"),
    ("energy", ["run", "--profile", "no-such-chip"], "no-such-chip"),
    ("export", ["run", "-o", "x.nir", "--verify", "-1"], "--verify"),
    ("eval", ["run", "--batch-size", "0"], "--batch-size"),
    ("lava-check", ["--steps", "-1"], "--steps"),
    ("train", ["--epochs", "0"], "epochs"),
    ("train", ["--head", "nope"], "head"),
    ("train", ["--target-sparsity", "1.5"], "target_sparsity"),
    ("train", ["--rank", "0"], "rank"),
    # v1's option on the v2 prompter: named, with the options lorsp has.
    ("train", ["--factors", "2"], "unknown config field(s) ['factors']"),
    ("train", ["--prompter", "lorsp_v1", "--grid", "4"], "unknown config field(s) ['grid']"),
    ("train", ["--backbone", "no_such_backbone", "--no-progress"], "no_such_backbone"),
    ("cosim", ["run", "--images", "two"], "two"),
    ("visualize", ["run", "--images", "0"], "images"),
    ("demo", ["--epochs", "0"], "epochs"),
    ("demo", ["--head", "nope"], "head"),
    ("demo", ["--image-size", "4"], "image_size"),
]


@pytest.mark.parametrize(
    ("command", "args", "mention"),
    [
        pytest.param(*case, marks=pytest.mark.slow) if "--backbone" in case[1] else case
        for case in BAD_VALUES
    ],
)
def test_bad_values_are_one_line_errors(command, args, mention, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, stderr = run_cli([command, *args])
    assert_one_line_error(command, status, stderr, mention)


TINY_TRAIN = [
    "--backbone", "timm:test_resnet", "--no-pretrained", "--dataset", "digits",
    "--train-size", "16", "--val-size", "8", "--test-size", "8", "--image-size", "16",
    "--epochs", "1", "--batch-size", "8", "--no-progress",
]  # fmt: skip


@pytest.mark.slow  # builds a backbone and loads a dataset before the prompter is looked up
@pytest.mark.parametrize(
    ("flag", "value"),
    [("--prompter", "no_such_prompter"), ("--dataset", "no_such_dataset")],
)
def test_unknown_prompter_or_dataset_names_the_known_ones(flag, value, tmp_path):
    status, _, stderr = run_cli(["train", *TINY_TRAIN, flag, value, "--out", str(tmp_path / "r")])
    assert_one_line_error("train", status, stderr, value, "known")
    assert not (tmp_path / "r").exists(), "nothing is written for a run that cannot start"


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    status, _, stderr = run_cli(["demo", "--quick", "--out", str(tmp_path)])
    assert_one_line_error("demo", status, stderr, str(tmp_path), "not written by `lorsp demo`")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_installed_entry_point_prints_one_line_and_no_traceback(tmp_path):
    """The console script, in a fresh process: what a user actually sees."""
    script = Path(sys.executable).with_name("lorsp")
    result = subprocess.run(
        [str(script), "nir-info", str(tmp_path / "missing.nir")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_line_error("nir-info", result.returncode, result.stderr, "missing.nir")


def test_nir_info_on_a_directory_says_it_is_one(tmp_path):
    status, _, stderr = run_cli(["nir-info", str(tmp_path)])
    assert_one_line_error("nir-info", status, stderr, str(tmp_path), "is a directory")


def test_a_command_that_imports_norse_prints_only_its_own_line(tmp_path):
    """Norse's import-time ``torch.jit.script`` FutureWarning is filtered at start-up, so a user
    error of a torch command (``eval`` loads Norse through the prompters) is still one line."""
    script = Path(sys.executable).with_name("lorsp")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"prompter": "lorsp", "dataset": "fashion_mnist"}')
    result = subprocess.run(
        [str(script), "eval", str(run)], capture_output=True, text=True, timeout=300
    )
    assert "FutureWarning" not in result.stderr, result.stderr
    assert_one_line_error("eval", result.returncode, result.stderr, "best.safetensors")


def test_every_command_waits_passively_for_openmp(monkeypatch):
    """Spinning OpenMP threads starve the working ones on shared cores; every command (not just
    demo) sets the passive policy before torch can load, unless the user chose one."""
    from lorsp_app.cli import prepare_process

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    prepare_process()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    prepare_process()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
