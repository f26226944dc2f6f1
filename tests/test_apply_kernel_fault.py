"""apply-routes meets a netlink fault outside any one route: a clear error, exit 1, no traceback,
and no tally that claims a route took effect.

A fault in the middle of a dump (the socket failing with EIO) cannot be
provoked on demand in a namespace here, so it is injected at the kernel
facade: ``Kernel.tables`` raises the ``OSError`` a failing socket raises.
Everything else is real: the CLI in-process, pyroute2 in a namespace made by
the test.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from cloudinit_hostrouting import cli, netlink

CONFIG = """\
#cloud-config
host_routing:
  static_routes:
    enabled: true
    routes:
      - destination: 10.0.5.0/24
"""


def _run(host, tmp_path: Path, capsys) -> tuple:
    cfg = tmp_path / "hr.yaml"
    cfg.write_text(CONFIG)
    code = cli.main(["apply-routes", "--config", str(cfg), "--netns", host.ns])
    return code, capsys.readouterr()


def test_a_netlink_fault_is_an_error_line_and_exit_1(host, tmp_path, capsys, monkeypatch):
    def fail(self, version, known=()):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(netlink.Kernel, "tables", fail)
    code, out = _run(host, tmp_path, capsys)
    assert code == cli.FAILED
    assert "error: talking to the kernel failed" in out.err
    assert "Input/output error" in out.err
    assert "which routes took effect is not known" in out.err
    assert "routes installed" not in out.out  # no tally claims success


def test_control_without_the_fault_the_route_is_installed(host, tmp_path, capsys):
    code, out = _run(host, tmp_path, capsys)
    assert code == cli.OK, out
    assert "1 of 1 routes installed" in out.out
    assert "10.0.5.0/24" in host.ip("-4", "route", "show").stdout


def test_other_exceptions_are_not_swallowed(host, tmp_path, capsys, monkeypatch):
    """Only OSError is a kernel fault; a bug elsewhere must still surface."""
    def bug(self, version, known=()):
        raise KeyError("bug")

    monkeypatch.setattr(netlink.Kernel, "tables", bug)
    with pytest.raises(KeyError):
        _run(host, tmp_path, capsys)
