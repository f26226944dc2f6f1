"""Every command documents itself: `--help` works and names the exit-code contract."""

from __future__ import annotations

import pytest
from cli_support import cli

from cloudinit_hostrouting.cli import build_parser

COMMANDS = sorted(build_parser().parse_args(["schema"]).handlers)


def test_the_documented_commands_exist() -> None:
    assert set(COMMANDS) >= {"apply-routes", "check-overlap", "render", "validate",
                             "enable-module", "azure-suggest", "guard", "uninstall", "schema"}


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str) -> None:
    proc = cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: cloudinit-hostrouting {command}")


def test_top_level_help_states_exit_codes() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    assert "Exit codes: 0 OK (WARN overlaps included), 1 job failed, 2 usage/config error." \
        in " ".join(proc.stdout.split())


def test_usage_error_exits_2() -> None:
    assert cli("apply-routes").returncode == 2  # --config missing
    assert cli("no-such-command").returncode == 2
