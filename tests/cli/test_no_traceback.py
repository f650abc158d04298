"""No traceback reaches a user: every `ledger` command, run with missing arguments, an unknown
option, made-up values and (for those that talk to one) a node that is down, ends with exit
status 1 or 2 and one line on stderr."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from ledger.cli import main
from ledger.devnet import free_base_port


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


COMMANDS = list(_commands(main))
# Commands that do real, long-running work when their arguments are valid: only their usage
# errors are run here (their behaviour has its own tests).
LONG_RUNNING = {("devnet", "up"), ("devnet", "init"), ("simulate",), ("node",)}


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def _value(param: click.Parameter) -> str:
    """A made-up value of the right type, naming nothing that exists."""
    kind = param.type
    if isinstance(kind, click.Choice):
        return str(kind.choices[0])
    if isinstance(kind, click.types.IntParamType):
        return "5"
    if isinstance(kind, click.types.FloatParamType):
        return "1"
    if param.name in ("digest_hex",):
        return "ab" * 32
    return "missing/x"


def _made_up_arguments(command: click.Command) -> list[str]:
    args: list[str] = []
    for param in command.params:
        if not param.required:
            continue
        if isinstance(param, click.Option):
            args += [param.opts[0], _value(param)]
        else:
            args.append(_value(param))
    return args


def _run(args: list[str], tmp_path: Path) -> Result:
    env = {k: None for k in os.environ if k.startswith("LEDGER_")}
    runner = CliRunner(
        env={**env, "LEDGER_TOKEN": "made-up-token", "LEDGER_ADMIN_TOKEN": "made-up-token"}
    )
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        return runner.invoke(main, args, input="")
    finally:
        os.chdir(cwd)


def _assert_clean(result: Result, args: list[str]) -> None:
    shown = f"ledger {' '.join(args)}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{shown}: {result.exception!r}"
    )
    assert "Traceback" not in result.output, shown
    if result.exit_code != 0:
        assert result.exit_code in (1, 2), f"{shown}: exit {result.exit_code}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, f"{shown}: {result.stderr!r}"


def test_every_command_is_found() -> None:
    assert len(COMMANDS) >= 40 and ("anchor",) in COMMANDS and ("eod", "trail") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_missing_arguments_and_unknown_options_give_one_line(
    path: tuple[str, ...], tmp_path: Path
) -> None:
    command = _command(path)
    if any(p.required for p in command.params):
        result = _run(list(path), tmp_path)
        _assert_clean(result, list(path))
        assert result.exit_code == 2
    result = _run([*path, "--no-such-option"], tmp_path)
    _assert_clean(result, [*path, "--no-such-option"])
    assert result.exit_code == 2


@pytest.mark.parametrize("path", [p for p in COMMANDS if p not in LONG_RUNNING], ids=" ".join)
def test_made_up_values_and_a_node_that_is_down_give_one_line(
    path: tuple[str, ...], tmp_path: Path
) -> None:
    command = _command(path)
    args = [*path, *_made_up_arguments(command)]
    _assert_clean(_run(args, tmp_path), args)
    down = f"http://127.0.0.1:{free_base_port(1)}"
    talks_to_a_node = any("--node" in getattr(p, "opts", ()) for p in command.params)
    if path[0] == "eod":
        eod = ["eod", "--node", down, "--data-dir", str(tmp_path / "office")]
        args = [*eod, *path[1:], *_made_up_arguments(command)]
        _assert_clean(_run(args, tmp_path), args)
    elif talks_to_a_node:
        (tmp_path / "missing").mkdir(exist_ok=True)
        (tmp_path / "missing" / "x").write_text("a document\n")
        extra = ["--remove", "validator-1"] if path == ("validators", "propose") else []
        args = [*path, "--node", down, *_made_up_arguments(command), *extra]
        result = _run(args, tmp_path)
        _assert_clean(result, args)
        assert result.exit_code in (1, 2)
