"""The composition root: builds the service tree from the bootstrap config.

The only module that constructs concrete classes and touches the global reactor (passed in from
cgtwist.tap). Start-up order: bind listeners (privileged, paused) -> drop privileges (twistd) ->
certificate, store, migrations, bootstrap accounts, settings -> spool recovery and queue ->
control socket -> resume listeners ("cgtwist ready"). Stop order is the reverse, letting SMTP
transactions in flight finish or answer 421.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from typing import Any, Optional

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.protocol import Factory

from cgtwist import paths
from cgtwist.config import BootstrapConfig
from cgtwist.listeners import ListenerManager
from cgtwist.logs import Logger
from cgtwist.reactor import streamline
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.tls import ServerTLS, ensure_certificate
from cgtwist.types import ListenerSpec

log = Logger(namespace="cgtwist")


class LateFactory(Factory):
    """Stands in for a protocol factory while the server starts.

    Sockets are bound (as root) before the store exists; they stay paused until start-up
    finishes and ``target`` is set, so no connection ever meets a LateFactory without one.
    """

    def __init__(self) -> None:
        self.target: Optional[Factory] = None

    def buildProtocol(self, addr: Any) -> Any:
        if self.target is None:
            return None
        return self.target.buildProtocol(addr)

    def doStop(self) -> None:
        if self.target is not None:
            self.target.doStop()
        super().doStop()


def read_settings_sync(cfg: BootstrapConfig) -> dict[str, Any]:
    """Read dynamic settings without the reactor, for binding before privileges are dropped.

    Only SQLite can be read this early; with PostgreSQL the listeners are bound with the
    built-in defaults and corrected once the store is open.
    """
    if not cfg.database_url.startswith("sqlite:///"):
        return {}
    from cgtwist.storage.engines import engine_for_url

    path = engine_for_url(cfg.database_url).path  # type: ignore[attr-defined]
    if not os.path.exists(path):
        return {}
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute("SELECT name, value FROM server_settings").fetchall()
            try:  # this node's own settings win (schema 2; before it they are all above)
                rows += con.execute("SELECT name, value FROM node_settings WHERE node = ?",
                                    (cfg.node,)).fetchall()
            except sqlite3.OperationalError:
                pass  # not migrated yet: the start's migration moves them
        finally:
            con.close()
    except sqlite3.Error as e:
        log.warn("cannot read settings from {path} before start: {err}", path=path, err=str(e))
        return {}
    out = {}
    for name, value in rows:
        try:
            out[name] = json.loads(value)
        except ValueError:
            continue
    return out


class CgtwistService(MultiService):
    """The whole server as one twistd service."""

    def __init__(self, cfg: BootstrapConfig, reactor: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.reactor = reactor
        self.settings = SettingsHolder()
        self.tls = ServerTLS(cfg.certificate, cfg.key)
        self.privileged = (os.geteuid() == 0) if cfg.unprivileged_ports is None else not cfg.unprivileged_ports
        self._late: list[tuple[ListenerSpec, LateFactory]] = []
        self.app: Any = None  # cgtwist.app.Components once started
        self.listeners = ListenerManager(reactor, {p: self._maker for p in ("smtp", "pop3", "imap")},
                                         self.tls, state_file=os.path.join(cfg.base_dir, "cgtwist.ports"))
        self._control_port: Any = None
        self.changes: Any = None  # cgtwist.storage.notify.ChangeListener (PostgreSQL only)
        self.workers: Any = None  # cgtwist.workers.SMTPWorkers once started
        self.ready: defer.Deferred[None] = defer.Deferred()

    # -- listeners ---------------------------------------------------------------------------
    def _maker(self, spec: ListenerSpec) -> Factory:
        if self.app is None:
            late = LateFactory()
            self._late.append((spec, late))
            return late
        return self.app.factory_for(spec)  # type: ignore[no-any-return]

    def _specs(self, settings: Settings) -> list[ListenerSpec]:
        try:
            return settings.listeners(self.privileged)
        except ValueError as e:
            log.error("invalid listeners setting ({err}); using the built-in defaults", err=str(e))
            return Settings().listeners(self.privileged)

    def privilegedStartService(self) -> None:
        os.makedirs(self.cfg.base_dir, exist_ok=True)
        early = read_settings_sync(self.cfg)
        try:
            specs = self._specs(Settings({k: v for k, v in early.items() if k == "listeners"}))
        except Exception:
            specs = Settings().listeners(self.privileged)
        self.listeners.paused = True
        self.listeners.tls_ready = False
        self.listeners.bind_all(specs)
        super().privilegedStartService()

    # -- start / stop ------------------------------------------------------------------------
    def _apply_log_level(self) -> None:
        """Filter events below [log] level on twistd's observers (file, syslog or stdout)."""
        from twisted.logger import FileLogObserver, LogLevel, globalLogPublisher

        from cgtwist.logs import LevelFilter, TurnBufferedFile, fast_text_format, set_level

        observers = list(getattr(globalLogPublisher, "_observers", []))
        for observer in observers:
            if isinstance(observer, FileLogObserver):
                observer.formatEvent = fast_text_format
                out = getattr(observer, "_outFile", None)
                if out is not None and not isinstance(out, TurnBufferedFile):
                    buffered = TurnBufferedFile(out, self.reactor)
                    observer._outFile = buffered  # type: ignore[assignment]
                    self.reactor.addSystemEventTrigger("after", "shutdown", buffered.flush_now)
        if self.cfg.log_level == "debug":
            return
        level = LogLevel.levelWithName(self.cfg.log_level)
        set_level(level)
        # twistd installs its observers before startService; wrap each in a level filter.
        for observer in observers:
            globalLogPublisher.removeObserver(observer)
            globalLogPublisher.addObserver(LevelFilter(observer, level))

    def startService(self) -> None:
        self._apply_log_level()
        streamline(self.reactor)  # no log context per I/O event (cgtwist.reactor)
        super().startService()
        d = defer.ensureDeferred(self._start())

        def failed(f: Any) -> None:
            log.failure("cgtwist failed to start", f)
            if self.reactor.running:
                self.reactor.stop()

        d.addErrback(failed)

    async def _start(self) -> None:
        from cgtwist.app import Components

        cfg = self.cfg
        for sub in (paths.QUEUE_DIR, paths.DOMAINS_DIR, paths.SUBMITTED_DIR):
            os.makedirs(os.path.join(cfg.base_dir, sub), exist_ok=True)
        if cfg.generated_certificate:
            names = [cfg.hostname, cfg.main_domain, "localhost"]
            await self._in_thread(ensure_certificate, cfg.certificate, cfg.key, names)
        self.tls.reload()
        self.listeners.tls_ready = True
        self.app = Components(cfg, self.reactor, self.settings, self.tls)
        await self.app.open()
        self.cfg = cfg = self.app.cfg  # the main domain may come from the store
        for spec, late in self._late:
            late.target = self.app.factory_for(spec)
        self._late.clear()
        await self.app.start()
        self._start_control()
        self._install_signals()
        await self.listeners.apply(self._specs(self.settings.current))
        from cgtwist.workers import SMTPWorkers

        self.workers = SMTPWorkers(self.reactor, cfg, adopt=self.app.manager.adopt,
                                   sweep=self.app.spool.incoming, count=self.app.spool.message_count)
        await self._configure_workers(self.settings.current)

        def rebind(settings: Settings) -> None:
            d = self.listeners.apply(self._specs(settings))
            d.addCallback(lambda _: self._configure_workers(settings))
            d.addErrback(lambda f: log.failure("applying the listener settings failed", f))

        self.settings.subscribe(rebind)
        self._listen_for_changes()
        self.listeners.resume()
        self.listeners._write_state()
        log.info("cgtwist ready: main domain {domain}, base {base}, {n} listener(s)",
                 domain=cfg.main_domain, base=cfg.base_dir, n=len(self.listeners.ports))
        self.ready.callback(None)

    def _configure_workers(self, settings: Settings) -> defer.Deferred[None]:
        """Hand the SMTP sockets to ``smtp.workers`` worker processes (0: accept here)."""
        assert self.workers is not None
        try:
            n = max(0, int(settings["smtp.workers"]))
        except (KeyError, TypeError, ValueError):
            n = 0
        self.listeners.delegate(frozenset({"smtp"}) if n else frozenset())
        return self.workers.configure(n, self.listeners.sockets("smtp") if n else [])

    def _in_thread(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        from twisted.internet.threads import deferToThreadPool

        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)

    async def reload_settings(self) -> None:
        assert self.app is not None
        await self.app.reload_settings()

    def _start_control(self) -> None:
        from cgtwist.control import ControlFactory

        sock = self.cfg.control_socket
        if os.path.exists(sock):
            os.unlink(sock)  # stale from a crash; a second live server would hold the pid lock
        handlers = dict(self.app.control_handlers())
        handlers["reload"] = lambda req: defer.ensureDeferred(self._control_reload(req))
        handlers["status"] = lambda req: {"listeners": self.listeners.describe()}
        if len(os.fsencode(sock)) > 100:  # sockaddr_un.sun_path is 108 bytes on Linux
            log.error("control socket {path} is too long a path for a UNIX socket; cgtwist-admin "
                      "changes will apply on SIGHUP or restart (use a shorter base directory)",
                      path=sock)
            return
        old = os.umask(0o077)
        try:
            self._control_port = self.reactor.listenUNIX(sock, ControlFactory(handlers), mode=0o600)
        finally:
            os.umask(old)

    async def _control_reload(self, req: Any) -> dict[str, Any]:
        await self.reload_settings()
        return {"listeners": self.listeners.describe()}

    def _listen_for_changes(self) -> None:
        """On PostgreSQL, reload settings (and so drop every cache of store facts) whenever a
        node announces a change that concerns this node (docs/CLUSTER.md)."""
        from cgtwist.storage.notify import Coalesced, listener_for

        self._reloads = Coalesced(self.reload_settings, "reloading settings after a change")
        self.changes = listener_for(self.app.store.db, self.reactor, self._changed)
        if self.changes is not None:
            self.changes.start()

    def _changed(self, change: Any) -> None:
        if not change.concerns(self.cfg.node):
            log.debug("node {node} changed its {what}: nothing to do here", node=change.node,
                      what=change.what)
            return
        if not change.resync:
            log.info("{what} by node {origin}: reloading settings and caches",
                     what=change.what, origin=change.origin)
        self._reloads.kick()

    def _install_signals(self) -> None:
        def hup(signum: int, frame: Any) -> None:
            self.reactor.callFromThread(self._sighup)

        try:
            signal.signal(signal.SIGHUP, hup)
        except ValueError:  # not in the main thread (tests)
            pass

    def _sighup(self) -> None:
        log.info("SIGHUP: reloading TLS certificate and settings")
        self.tls.reload()
        defer.ensureDeferred(self.reload_settings()).addErrback(
            lambda f: log.failure("settings reload failed", f))

    def stopService(self) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        log.info("cgtwist stopping: no new connections, finishing transactions in flight")
        self.listeners.pause()
        if self.changes is not None:
            self.changes.stop()
        workers = self.workers.stop() if self.workers is not None else defer.succeed(None)
        if self.app is not None:
            try:
                await self.app.drain()
            except Exception:
                log.failure("error while draining sessions")
        await workers  # their transactions in flight end in Queue/incoming/, adopted at start
        await self.listeners.stop()
        if self._control_port is not None:
            await defer.maybeDeferred(self._control_port.stopListening)
        if self.app is not None:
            await self.app.close()
        await defer.maybeDeferred(super().stopService)
        log.info("cgtwist stopped")


def build(cfg: BootstrapConfig, reactor: Any) -> CgtwistService:
    return CgtwistService(cfg, reactor)
