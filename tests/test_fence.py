"""The fence of Twisted's internals: outside ``cgtwist/runtime/`` no module names a private
part of Twisted that cgtwist is known to reach (cgtwist/runtime/__init__.py).

import-linter sees Twisted only as one package, so it cannot say "only cgtwist.runtime
imports twisted.internet.tcp"; this test reads the source instead. Each pattern is a
private name of a Twisted object with what it is; a name a cgtwist class also uses for its
own attribute counts only when reached on another object (not ``self.``) or by string
(``getattr(x, "_name")``). A new use outside the fence fails here: move it into
cgtwist/runtime/ with a ``missing`` check and a plain fallback, or, where there is no plain
way, list it in ``KNOWN`` with the reason.
"""

from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "cgtwist"
FENCE = ROOT / "runtime"

_ANY = r"\b{name}\b"  # the name anywhere: nothing in cgtwist uses it for its own
_OTHERS = r"(?<!self)\.{name}\b|[\"']{name}[\"']"  # on another object, or by string

PRIVATE = {
    "_tempDataBuffer": (_ANY, "FileDescriptor's write queue (runtime.fastwrite)"),
    "_writeDisconnected": (_ANY, "FileDescriptor's half-close flag (runtime.fastwrite)"),
    "_writer": (_OTHERS, "StandardIO's pipe writer (runtime.fastwrite)"),
    "doPoll": (_ANY, "the reactor's poll step (runtime.reactor)"),
    "doIteration": (_ANY, "what the reactor's main loop calls (runtime.reactor)"),
    "callWithLogger": (_ANY, "the per-event log context (runtime.reactor)"),
    "_selectables": (_ANY, "EPollReactor's fd map (runtime.reactor)"),
    "_poller": (_ANY, "EPollReactor's epoll object (runtime.reactor)"),
    "_doReadOrWrite": (_ANY, "the reactor's per-event dispatch (runtime.reactor)"),
    "_reads": (_ANY, "a reactor's readers"),
    "_writes": (_ANY, "a reactor's writers"),
    "_exitSignal": (_ANY, "the signal twistd exits with (runtime.stopsignals)"),
    "_observers": (_OTHERS, "a LogPublisher's observers (runtime.logobservers)"),
    "_outFile": (_ANY, "FileLogObserver's file (runtime.logobservers)"),
    "theLogPublisher": (_ANY, "twisted.python.log's global publisher"),
    "_threadpool": (r"reactor\._threadpool\b|[\"']_threadpool[\"']", "the reactor's thread pool"),
    "_buffer": (_OTHERS, "LineReceiver/LineOnlyReceiver's unread bytes"),
}

# Uses outside the fence that have no stock-Twisted equivalent yet, each with its reason.
# (path relative to cgtwist/, private name): why it may stay. Not found by these patterns:
# a Twisted subclass's own ``self._name`` (protocols/pop3.py clears LineOnlyReceiver's
# ``self._buffer`` at STLS, CVE-2011-0411), which reads like the class's own attribute.
KNOWN: dict[tuple[str, str], str] = {}


def uses_outside_the_fence() -> list[str]:
    found = []
    patterns = {
        name: re.compile(
            template.format(name=re.escape(name)) if "{name}" in template else template
        )
        for name, (template, _) in PRIVATE.items()
    }
    for path in sorted(ROOT.rglob("*.py")):
        if FENCE in path.parents:
            continue
        relative = path.relative_to(ROOT).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            for name, pattern in patterns.items():
                if pattern.search(code) and (relative, name) not in KNOWN:
                    found.append(f"cgtwist/{relative}:{number}: {name} ({PRIVATE[name][1]})")
    return found


def test_twisted_internals_only_inside_the_fence() -> None:
    """No module outside cgtwist/runtime/ reaches a known private part of Twisted."""
    assert uses_outside_the_fence() == []


def test_the_check_finds_a_new_use(tmp_path: pathlib.Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A module outside the fence that reads a transport's write queue is reported (the
    check would otherwise pass by finding nothing at all)."""
    package = tmp_path / "cgtwist"
    (package / "runtime").mkdir(parents=True)
    (package / "runtime" / "fastwrite.py").write_text("x = t._tempDataBuffer\n")
    (package / "protocols").mkdir()
    (package / "protocols" / "smtp.py").write_text(
        "ok = self._buffer\nbad = transport._tempDataBuffer\nalso = getattr(o, '_observers')\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", package)
    monkeypatch.setattr(sys.modules[__name__], "FENCE", package / "runtime")
    found = uses_outside_the_fence()
    assert [f.split(" ")[0] for f in found] == [
        "cgtwist/protocols/smtp.py:2:",
        "cgtwist/protocols/smtp.py:3:",
    ]
