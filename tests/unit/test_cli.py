"""The command line: every command registered, common options everywhere, a command module
that fails to import stops the CLI instead of its command quietly missing."""

from __future__ import annotations

import argparse
import sys

import pytest

from oonibackend import cli

# The commands the systemd units, the docs and the tests name.
COMMANDS = {"run", "db-owner", "serve", "db", "update-citizenlab", "update-fingerprints",
            "fastpath", "upload", "update-asnmeta", "download-geoip", "backup", "export",
            "restore", "rotate", "detect", "account-role", "bootstrap", "anonc-rotate"}
# Commands with subcommands, and theirs.
NESTED = {"db": {"migrate", "exec", "rebuild-rollups"}, "fastpath": {"serve", "score", "reprocess"}}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_every_command_is_registered():
    commands = subcommands(cli.build_parser())
    assert set(commands) == COMMANDS
    for name, nested in NESTED.items():
        assert set(subcommands(commands[name])) == nested


@pytest.mark.parametrize("argv", [[c] for c in COMMANDS - set(NESTED)]
                         + [[c, s] for c, subs in NESTED.items() for s in subs])
def test_common_options_on_every_command(argv: list[str]):
    parser = cli.build_parser()
    command = parser
    for name in argv:
        command = subcommands(command)[name]
    options = {o for a in command._actions for o in a.option_strings}
    assert {"--config", "--data-dir", "-h"} <= options, argv


def test_common_options_parsed():
    args = cli.build_parser().parse_args(["detect", "--data-dir", "/d", "--config", "c.toml"])
    assert (args.data_dir, args.config, args.command) == ("/d", "c.toml", "detect")
    args = cli.build_parser().parse_args(["fastpath", "serve", "--data-dir", "/d"])
    assert args.data_dir == "/d" and args.fastpath_command == "serve"


@pytest.mark.parametrize("module", cli.COMMANDS)
def test_a_command_that_fails_to_import_fails_loudly(module: str,
                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, module, None)  # importing it raises ImportError
    with pytest.raises(ImportError, match=module.replace(".", r"\.")):
        cli.build_parser()
