"""etc/cgtwist.service: the unit must run what README's install creates and keep its pid file
and log where the server, after dropping root, may remove and rotate them."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(ROOT, "etc", "cgtwist.service")


def read(*path: str) -> str:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(read("etc", "cgtwist.service"))
    return parser


def exec_start() -> list[str]:
    return shlex.split(unit()["Service"]["ExecStart"].lstrip("+-@:!"))


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def section(readme: str, title: str) -> str:
    start = readme.index(title)
    end = readme.find("\n## ", start + len(title))
    return readme[start : end if end != -1 else None]


def test_exec_start_is_the_twistd_readme_installs() -> None:
    """The unit ran /usr/local/bin/twistd, which the documented install never creates."""
    install = section(read("README.md"), "## Installing as a service")
    venv = re.search(r"python3 -m venv (\S+)", install)
    assert venv is not None
    assert exec_start()[0] == os.path.join(venv.group(1), "bin", "twistd")


def test_ordering_user_and_directories() -> None:
    """Started after the network and a local PostgreSQL; /run/cgtwist and /var/log/cgtwist
    belong to the user the server drops to, so it can remove its pid file at exit (a
    root-owned RuntimeDirectory kept it after every stop) and rotate its log."""
    u = unit()
    assert set(u["Unit"]["After"].split()) >= {"network-online.target", "postgresql.service"}
    assert "network-online.target" in u["Unit"]["Wants"].split()
    service = u["Service"]
    assert service["User"] == service["Group"] == "cgtwist"
    assert service["RuntimeDirectory"] == "cgtwist"
    assert service["LogsDirectory"] == "cgtwist"
    argv = exec_start()
    assert option(argv, "--uid") == service["User"] and option(argv, "--gid") == service["Group"]
    assert option(argv, "--pidfile") == service["PIDFile"]
    assert os.path.dirname(service["PIDFile"]) == "/run/" + service["RuntimeDirectory"]
    assert os.path.dirname(option(argv, "--logfile")) == "/var/log/" + service["LogsDirectory"]


def test_readme_daemon_pidfile_folder_belongs_to_the_service_user() -> None:
    """README's daemon command put the pid file in /run, which the --uid user cannot
    remove it from."""
    daemon = section(read("README.md"), "## Running as a daemon")
    command = re.search(r"^sudo \S*/twistd (.*)$", daemon.replace("\\\n", " "), re.M)
    assert command is not None
    argv = shlex.split(command.group(1))
    folder = os.path.dirname(option(argv, "--pidfile"))
    user = option(argv, "--uid")
    assert re.search(rf"install -d .*-o {user} .*\s{re.escape(folder)}\n", daemon), folder


def test_systemd_analyze_verify_is_clean(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``systemd-analyze verify`` finds nothing to say, with the venv's twistd path pointed
    at a stand-in (there is no /opt/cgtwist on a test machine)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    twistd = tmp_path / "twistd"
    twistd.write_text("#!/bin/sh\n")
    twistd.chmod(0o755)
    copy = tmp_path / "cgtwist.service"
    copy.write_text(read("etc", "cgtwist.service").replace(exec_start()[0], str(twistd)))
    r = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")
