"""Fuzzing configs and the command line: every bad input ends in a clear error.

Configs: training configs as dicts, as YAML/JSON files (random text and bytes, wrong types,
NaN/Inf, huge numbers, unknown keys, YAML tags and alias bombs, deep nesting), prompter configs,
hardware profile files and run directories' ``config.json``. Each must build or end in a
:class:`~lorsp_neuro.errors.LorspError` with a one-line message.

CLI: random argument lists for every ``lorsp`` subcommand, run in-process through
:func:`lorsp_app.cli.main` (and a few through a real process). Each must return normally or
exit through argparse with status 2 (0 for ``--help``/``--version``); a failure prints one
``error:`` line and no traceback. Arguments that could start real work (training, Lava) always
carry an invalid value, so every case fails fast.

The number of cases each test ran is printed (``fuzz[...]: N cases``) even without ``-s``.
``LORSP_FUZZ_SCALE`` multiplies the quotas.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hardware_sims.energy import load_profiles
from lorsp_app.cli import build_parser
from lorsp_app.cli import main as cli_main
from lorsp_neuro.checkpoint import save_checkpoint
from lorsp_neuro.data import dataset_source
from lorsp_neuro.errors import LorspError
from lorsp_neuro.prompters import create_prompter, list_prompters, prompter_class
from lorsp_neuro.run_config import TrainConfig, read_config_file
from lorsp_neuro.runs import read_run_config

REPO = Path(__file__).resolve().parents[1]
SCALE = float(os.environ.get("LORSP_FUZZ_SCALE", "1"))
CONFIG_CASES = {
    "train dict": round(350 * SCALE),
    "config file": round(350 * SCALE),
    "prompter": round(250 * SCALE),
    "profiles and run config": round(150 * SCALE),
}
CLI_CASES = max(1, round(1100 * SCALE))
CASE_DEADLINE_S = 30

FUZZ = settings(
    deadline=timedelta(seconds=CASE_DEADLINE_S),
    derandomize=True,  # the same cases on every CI run; raise LORSP_FUZZ_SCALE to explore more
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

CASES: Counter = Counter()

#: A valid, tiny training config (a random 96-feature ResNet, 16 px Fashion-MNIST).
TINY = {
    "prompter": "lorsp",
    "backbone": "timm:test_resnet",
    "pretrained": False,
    "dataset": "fashion_mnist",
    "train_size": 64,
    "val_size": 32,
    "test_size": 32,
    "image_size": 16,
    "epochs": 1,
    "batch_size": 16,
    "eval_batch_size": 32,
    "lr": 1e-2,
    "progress": False,
}


def report_cases(capsys, record_property, target: str, minimum: int) -> None:
    """Print the case counts of ``target`` (visible without ``-s``) and check the quota ran."""
    counts = {k[1]: v for k, v in CASES.items() if k[0] == target}
    total = sum(counts.values())
    record_property(f"fuzz_cases_{target}", total)
    with capsys.disabled():
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"\nfuzz[{target}]: {total} cases ({detail})")
    assert total >= minimum, f"only {total} of {minimum} {target} cases ran"


def check_error(exc: LorspError) -> None:
    message = str(exc)
    assert message.strip(), f"{type(exc).__name__} with an empty message"
    assert "\n" not in message, f"{type(exc).__name__} is not one line: {message!r}"


# --------------------------------------------------------------------------------------------
# Values


#: Anything a careless or hostile config could hold in one field.
STRANGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.sampled_from([2**31, 2**62, -(2**63), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-2, 5), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-2, 5), max_size=2),
)


def settle(kind: str, action):
    """Run ``action``; a LorspError is a fine outcome. Count the case and return the result."""
    started = time.monotonic()
    try:
        result = action()
    except LorspError as exc:
        check_error(exc)
        CASES["config", f"{kind}: rejected"] += 1
        return None
    finally:
        assert time.monotonic() - started < CASE_DEADLINE_S
    CASES["config", f"{kind}: accepted"] += 1
    return result


#: Option keys a fuzzed config sets: fields of ``lorsp`` (v2), v1's ``factors`` (unknown to v2),
#: and keys no prompter, backbone or dataset has.
OPTION_KEYS = ["rank", "steps", "grid", "target_sparsity", "persistent", "dt", "factors", "x", ""]


def use_config(config: TrainConfig) -> None:
    """What a valid TrainConfig reaches cheaply: its prompter, dataset name and JSON form.

    Sizes are capped here (a valid config may ask for a 10⁹-pixel prompter: reliability.md).
    """
    json.dumps(config.to_dict(), allow_nan=True)
    dataset_source(config.dataset)
    size = config.image_size or 16
    if size <= 64 and all(
        not isinstance(v, int) or isinstance(v, bool) or v <= 64
        for v in config.prompter_options.values()
    ):
        create_prompter(config.prompter, size, **config.prompter_options)


def test_training_config_dicts(capsys, record_property):
    fields = sorted(TrainConfig.__dataclass_fields__)

    @settings(FUZZ, max_examples=CONFIG_CASES["train dict"])
    @given(data=st.data())
    def case(data):
        config = dict(TINY)
        for _ in range(data.draw(st.integers(1, 3), label="changes")):
            what = data.draw(st.sampled_from(["set", "unknown key", "drop", "option"]))
            if what == "set":
                config[data.draw(st.sampled_from(fields))] = data.draw(STRANGE)
            elif what == "unknown key":
                config[data.draw(st.text(max_size=8))] = data.draw(STRANGE)
            elif what == "drop" and config:
                config.pop(data.draw(st.sampled_from(sorted(config))))
            else:
                options = data.draw(
                    st.sampled_from(["prompter_options", "backbone_options", "dataset_options"])
                )
                config[options] = data.draw(
                    st.dictionaries(
                        st.sampled_from(OPTION_KEYS),
                        STRANGE,
                        max_size=3,
                    )
                    | STRANGE
                )
        settle("train dict", lambda: use_config(TrainConfig.from_dict(config)))

    case()
    report_cases(capsys, record_property, "config", CONFIG_CASES["train dict"])


def yaml_alias_bomb(levels: int = 8, width: int = 9) -> str:
    """``billion laughs``: each level lists the previous one ``width`` times (9⁸ leaves)."""
    names = [f"l{i}" for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['x'] * width)}]"]
    for previous, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * width)}]")
    lines.append(f"prompter_options: {{rank: *{names[-1]}}}")
    return "\n".join(lines) + "\n"


#: Hostile YAML: code-running tags, an alias bomb, deep nesting, odd scalars.
NASTY_YAML = [
    "!!python/object/apply:os.system ['echo owned']",
    "epochs: !!python/name:os.system\n",
    yaml_alias_bomb(),
    "prompter_options: " + "[" * 5000 + "]" * 5000 + "\n",
    "epochs: .nan\nlr: .inf\n",
    "epochs: 1e400\n",
    "seed: 0x7fffffffffffffffffff\n",
    "? [a, b]\n: 1\n",
    "epochs: 3\nepochs: 4\n",
    "--- 1\n--- 2\n",
    "%YAML 9.9\n---\nepochs: 1\n",
    "\ufeffepochs: 1\n",
    "epochs: 1\n\x00",
]


@st.composite
def config_file_text(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".yaml", ".yml", ".json", ".txt"]))
    kind = draw(st.sampled_from(["mapping", "nasty", "text", "bytes", "truncated"]))
    if kind == "mapping":
        mapping = {
            **TINY,
            **draw(st.dictionaries(st.sampled_from(sorted(TINY)), STRANGE, max_size=3)),
        }
        dump = json.dumps if suffix == ".json" else yaml.safe_dump
        return suffix, dump(mapping).encode()
    if kind == "nasty":
        return suffix, draw(st.sampled_from(NASTY_YAML)).encode()
    if kind == "text":
        return suffix, draw(st.text(max_size=200)).encode("utf-8", errors="surrogatepass")
    if kind == "bytes":
        return suffix, draw(st.binary(max_size=200))
    whole = yaml.safe_dump(TINY).encode()
    return suffix, whole[: draw(st.integers(0, len(whole) - 1))]


def test_training_config_files(tmp_path, capsys, record_property):
    serial = iter(range(10**9))

    @settings(FUZZ, max_examples=CONFIG_CASES["config file"])
    @given(file=config_file_text())
    def case(file):
        suffix, content = file
        path = tmp_path / f"config-{next(serial)}{suffix}"
        path.write_bytes(content)

        def load():
            fields = read_config_file(path)
            use_config(TrainConfig.from_dict(fields, str(path)))

        settle("config file", load)
        path.unlink()

    case()
    report_cases(capsys, record_property, "config", CONFIG_CASES["config file"])


def test_prompter_configs(capsys, record_property):
    names = [*list_prompters(), "nosuch", ""]

    @settings(FUZZ, max_examples=CONFIG_CASES["prompter"])
    @given(data=st.data())
    def case(data):
        name = data.draw(st.sampled_from(names), label="prompter")
        known = (
            sorted(prompter_class(name).Config.__dataclass_fields__)
            if name in list_prompters()
            else []
        )
        fields = data.draw(
            st.dictionaries(st.sampled_from([*known, "nosuch"]), STRANGE, max_size=3),
            label="fields",
        )
        # Sizes stay small where a value is valid: a valid 10⁹-neuron prompter is no bad input.
        fields = {k: v for k, v in fields.items() if not (isinstance(v, int) and v > 64)}
        size = data.draw(st.integers(-2, 24) | st.sampled_from([(8, 12), (0, 4), "16", 1.5, None]))
        settle("prompter", lambda: create_prompter(name, size, **fields))

    case()
    report_cases(capsys, record_property, "config", CONFIG_CASES["prompter"])


@st.composite
def json_document(draw) -> bytes:
    kind = draw(st.sampled_from(["profiles", "run config", "text", "bytes", "deep"]))
    if kind == "profiles":
        fields = ["description", "synop_pj", "graded_synop_pj", "neuron_update_active_pj",
                  "neuron_update_inactive_pj", "spike_pj", "mac_pj", "host_mac_pj", "sources", "x"]  # fmt: skip
        entry = draw(st.dictionaries(st.sampled_from(fields), STRANGE, max_size=9))
        profile = entry if draw(st.integers(0, 3)) else draw(STRANGE)
        return json.dumps({draw(st.text(max_size=6)): profile}).encode()
    if kind == "run config":
        return json.dumps(
            {**TINY, **draw(st.dictionaries(st.text(max_size=8), STRANGE, max_size=3))}
        ).encode()
    if kind == "text":
        return draw(st.text(max_size=100)).encode("utf-8", errors="surrogatepass")
    if kind == "deep":
        return b"[" * 3000 + b"]" * 3000
    return draw(st.binary(max_size=100))


def test_profile_files_and_run_configs(tmp_path, capsys, record_property):
    serial = iter(range(10**9))

    @settings(FUZZ, max_examples=CONFIG_CASES["profiles and run config"])
    @given(document=json_document(), as_profiles=st.booleans())
    def case(document, as_profiles):
        if as_profiles:
            path = tmp_path / f"profiles-{next(serial)}.json"
            path.write_bytes(document)
            settle("profiles", lambda: load_profiles(path))
        else:
            run = tmp_path / f"run-{next(serial)}"
            run.mkdir()
            (run / "config.json").write_bytes(document)
            settle("run config", lambda: read_run_config(run))

    case()
    report_cases(capsys, record_property, "config", CONFIG_CASES["profiles and run config"])


# --------------------------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    """Files and folders for arguments: missing, wrong kind, damaged, and a few valid ones."""
    root = tmp_path_factory.mktemp("cli")
    text = root / "notes.txt"
    text.write_text("not a NIR file, not a run\n")
    binary = root / "noise.bin"
    binary.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8)))
    (root / "empty").mkdir()
    import nir

    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([2])}),
            "lif": nir.LIF(
                tau=np.full(2, 0.01),
                r=np.ones(2),
                v_leak=np.zeros(2),
                v_threshold=np.ones(2),
                v_reset=np.zeros(2),
            ),
            "output": nir.Output(output_type={"output": np.array([2])}),
        },
        edges=[("input", "lif"), ("lif", "output")],
        metadata={"dt": 1e-3},
    )
    valid_nir = root / "valid.nir"
    nir.write(str(valid_nir), graph)
    cut_nir = root / "cut.nir"
    cut_nir.write_bytes(valid_nir.read_bytes()[:900])
    garbage_run = root / "garbage-run"
    garbage_run.mkdir()
    (garbage_run / "config.json").write_text("{not json")
    list_run = root / "list-run"
    list_run.mkdir()
    (list_run / "config.json").write_text("[1, 2]")
    bare_run = root / "bare-run"
    bare_run.mkdir()
    (bare_run / "config.json").write_text(json.dumps(TINY))
    cut_run = root / "cut-run"
    (cut_run / "checkpoints").mkdir(parents=True)
    (cut_run / "config.json").write_text(json.dumps(TINY))
    save_checkpoint(cut_run / "best.safetensors", {"w": torch.zeros(4)}, {"epoch": 1})
    data = (cut_run / "best.safetensors").read_bytes()
    (cut_run / "best.safetensors").write_bytes(data[: len(data) // 2])
    (cut_run / "checkpoints" / "epoch-0001.safetensors").write_bytes(data[:-3])
    pickled_run = root / "pickled-run"
    pickled_run.mkdir()
    (pickled_run / "config.json").write_text(json.dumps(TINY))
    torch.save({"w": torch.zeros(2)}, pickled_run / "best.safetensors")
    yaml_config = root / "config.yaml"
    yaml_config.write_text(yaml.safe_dump(TINY))
    bad_yaml = root / "bad.yaml"
    bad_yaml.write_text(NASTY_YAML[0])
    profiles = root / "profiles.json"
    profiles.write_text(json.dumps({"chip": {"description": "x", "synop_pj": "free"}}))
    return {
        "missing": str(root / "missing.nir"),
        "missing folder": str(root / "no-such-folder" / "out.json"),
        "under a file": str(text / "out.json"),
        "text": str(text),
        "binary": str(binary),
        "empty folder": str(root / "empty"),
        "valid nir": str(valid_nir),
        "cut nir": str(cut_nir),
        "garbage run": str(garbage_run),
        "list run": str(list_run),
        "bare run": str(bare_run),
        "cut run": str(cut_run),
        "pickled run": str(pickled_run),
        "yaml config": str(yaml_config),
        "bad yaml": str(bad_yaml),
        "bad profiles": str(profiles),
        "output": str(root / "out.json"),
    }


#: Commands whose handlers are fuzzed with random arguments (the heavy ones get a guard below).
#: Any other subcommand (e.g. ``demo``) is fuzzed through its parser only: its arguments always
#: include an unknown flag, so argparse refuses them before any work starts.
HANDLED = {"train", "eval", "list", "export", "nir-info", "cosim", "energy", "hw-profiles",
           "lava-check", "visualize"}  # fmt: skip
#: Paths a command may get as its main input: never a valid NIR file or run for commands that
#: would then simulate or train.
SOURCES = {
    "nir-info": ["valid nir", "cut nir", "text", "binary", "missing", "empty folder"],
    "cosim": [
        "cut nir",
        "text",
        "binary",
        "missing",
        "empty folder",
        "garbage run",
        "bare run",
        "cut run",
        "pickled run",
        "list run",
    ],
}
SOURCES["energy"] = SOURCES["cosim"]
for _command in ("eval", "export", "visualize"):
    SOURCES[_command] = [
        "garbage run", "list run", "bare run", "cut run", "pickled run", "missing", "text",
        "empty folder",
    ]  # fmt: skip
#: Appended to ``train`` arguments (the last flag wins): a config that fails before training.
TRAIN_GUARDS = [
    ["--epochs", "0"],
    ["--lr", "nan"],
    ["--head", "knn"],
    ["--batch-size", "-4"],
    ["--image-size", "3"],
    ["--dataset", "nosuch", "--backbone", "timm:test_resnet", "--no-pretrained"],
    [
        "--dataset",
        "digits",
        "--train-size",
        "8",
        "--val-size",
        "4",
        "--test-size",
        "4",
        "--image-size",
        "8",
        "--backbone",
        "timm:test_resnet",
        "--no-pretrained",
        "--prompter-opt",
        "grid=3",
        "--prompter-opt",
        "rank=0",
    ],
]
VALUES = ["0", "-1", "1", "3", "nan", "inf", "-inf", "1e309", "2147483648", "9" * 25, "abc", "",
          "é\u2028", "x=y", "=", "a=[1,", "rank=!!python/object/apply:os.system ['true']",
          "cuda", "cuda:7", "tpu", "auto", "best", "last", "-"]  # fmt: skip


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """Every option string of ``parser`` with its action (found by introspection)."""
    return [
        (option, action)
        for action in parser._actions
        for option in action.option_strings
        if option not in ("-h", "--help")
    ]


@st.composite
def argv_for(draw, paths: dict[str, str], parsers: dict) -> list[str]:
    command = draw(st.sampled_from([*sorted(parsers), "nosuch", "", "--version", "-q"]))
    if command not in parsers:
        return [command, *draw(st.lists(st.sampled_from(VALUES), max_size=3))]
    flags = _flags(parsers[command])
    path_pool = [paths[k] for k in SOURCES.get(command, ["missing", "text"])]
    other_paths = ["output", "missing folder", "under a file", "yaml config", "bad yaml",
                   "bad profiles", "binary"]  # fmt: skip
    strange = st.sampled_from(VALUES) | st.sampled_from([*path_pool, *map(paths.get, other_paths)])
    tokens = [command]
    if command in SOURCES and draw(st.integers(0, 9)) > 0:
        tokens.append(draw(st.sampled_from(path_pool)))
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["flag", "flag", "flag", "flag", "word", "help"]))
        if kind == "flag" and flags:
            option, action = draw(st.sampled_from(flags))
            if action.nargs == 0:
                tokens.append(option)
                continue
            # Half the values are plausible (a listed choice, a small number), so that the
            # handlers, not only argparse, see the rest of the arguments.
            plausible = st.sampled_from([str(c) for c in action.choices or ["1", "2", "0.5"]])
            tokens += [option, draw(plausible | strange)]
        elif kind == "word":
            tokens.append(draw(strange))
        elif draw(st.integers(0, 9)) == 0:
            tokens.append("--help")
    if command == "train":
        tokens += draw(st.sampled_from(TRAIN_GUARDS))
    elif command == "lava-check":
        tokens += ["--steps", draw(st.sampled_from(["0", "-1", "-20"]))]
    elif command not in HANDLED:
        tokens.append("--no-such-flag")
    return tokens


def run_cli(argv: list[str]) -> tuple[str, int, str]:
    """Run ``lorsp argv`` in-process; return (how it ended, status, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli_main(argv)
        except SystemExit as exc:
            return "exit", exc.code if isinstance(exc.code, int) else 1, err.getvalue()
    return "return", status, err.getvalue()


def check_cli_outcome(argv: list[str], how: str, status: int, stderr: str) -> str:
    assert "Traceback" not in stderr, f"lorsp {argv}: traceback\n{stderr}"
    asks_help = any(t in ("-h", "--help", "--version") for t in argv)
    if how == "exit":
        assert status == 2 or (status == 0 and asks_help), f"lorsp {argv}: exit {status}"
        if status == 2:
            last = stderr.strip().split("\n")[-1]
            assert last.startswith("lorsp") and "error:" in last, f"lorsp {argv}: {stderr!r}"
        return "usage error" if status == 2 else "help"
    assert status in (0, 1, 2, 130), f"lorsp {argv}: returned {status}"
    if status == 2:
        lines = stderr.strip().split("\n")
        errors = [line for line in lines if ": error: " in line]
        assert len(errors) == 1 and errors[0] == lines[-1], f"lorsp {argv}: {stderr!r}"
        return "error"
    return "ran"


def test_random_command_lines_end_cleanly(paths, tmp_path, monkeypatch, capsys, record_property):
    parsers = _subcommands()
    threads = torch.get_num_threads()
    monkeypatch.chdir(tmp_path)  # a random word may be taken as a file to write (--json 0)

    @settings(FUZZ, max_examples=CLI_CASES)
    @given(argv=argv_for(paths, parsers))
    def case(argv):
        started = time.monotonic()
        how, status, stderr = run_cli(argv)
        outcome = check_cli_outcome(argv, how, status, stderr)
        assert time.monotonic() - started < CASE_DEADLINE_S, f"lorsp {argv} took too long"
        CASES["cli", f"{argv[0] or '(empty)'}: {outcome}"] += 1

    try:
        case()
    finally:
        torch.set_num_threads(threads)
    counts = Counter()
    for (target, label), n in CASES.items():
        if target == "cli":
            counts[label.split(": ")[0]] += n
    rarely = CLI_CASES // (6 * (len(parsers) + 4))
    assert all(counts[c] >= rarely for c in parsers), f"commands fuzzed too rarely: {counts}"
    report_cases(capsys, record_property, "cli", CLI_CASES)


#: Arguments (given the ``paths`` fixture) run through a real ``python -m lorsp_app.cli``.
SUBPROCESS_CASES = [
    lambda p: ["nir-info", p["cut nir"]],
    lambda p: ["nir-info", p["binary"], "--json", p["missing folder"]],
    lambda p: ["train", "--config", p["bad yaml"]],
    lambda p: ["eval", p["cut run"]],
    lambda p: ["hw-profiles", "--profiles-file", p["bad profiles"]],
    lambda p: ["export", p["pickled run"], "-o", p["output"]],
]


@pytest.mark.slow
def test_command_lines_in_a_real_process_fail_in_one_line(paths, capsys, record_property):
    """The console entry point, as a user runs it: exit status 2, one error line, no traceback."""
    for make_argv in SUBPROCESS_CASES:
        argv = make_argv(paths)
        result = subprocess.run(
            [sys.executable, "-m", "lorsp_app.cli", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 2, (argv, result.returncode, result.stderr)
        assert "Traceback" not in result.stderr, (argv, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("lorsp") and "error:" in last, (argv, result.stderr)
        CASES["cli-process", argv[0]] += 1
    report_cases(capsys, record_property, "cli-process", len(SUBPROCESS_CASES))
