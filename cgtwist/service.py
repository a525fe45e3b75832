"""The composition root: builds the service tree from the bootstrap config.

The only module that constructs concrete classes and touches the global reactor (passed in from
cgtwist.tap). Start-up order: bind listeners (privileged, paused) -> drop privileges (twistd) ->
certificate, store, migrations, bootstrap accounts, settings -> spool recovery and queue ->
control socket -> resume listeners ("cgtwist ready"). Stop order is the reverse, letting SMTP
transactions in flight finish or answer 421.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IProtocolFactory
from twisted.python.logfile import LogFile

from cgtwist import filemodes, paths
from cgtwist.config import BootstrapConfig
from cgtwist.durable import make_dirs
from cgtwist.errors import ConfigError
from cgtwist.listeners import ListenerManager
from cgtwist.logs import Logger, RotatingLogFile
from cgtwist.runtime import logobservers
from cgtwist.runtime.mode import Runtime
from cgtwist.runtime.stopsignals import StopSignals
from cgtwist.settings import Settings, SettingsHolder, describe_changes
from cgtwist.tls import ServerTLS, ensure_certificate
from cgtwist.typedtwisted import Factory, MultiService, close_log_file
from cgtwist.types import ListenerSpec

if TYPE_CHECKING:
    from twisted.internet import protocol

    from cgtwist.app import Components
    from cgtwist.imapworker.supervisor import IMAPWorkers
    from cgtwist.smtpworker.supervisor import SMTPWorkers

log = Logger(namespace="cgtwist")


class LateFactory(Factory):
    """Stands in for a protocol factory while the server starts.

    Sockets are bound (as root) before the store exists; they stay paused until start-up
    finishes and ``target`` is set, so no connection ever meets a LateFactory without one.
    """

    def __init__(self) -> None:
        self.target: Optional[IProtocolFactory] = None

    def buildProtocol(self, addr: Any) -> Any:
        if self.target is None:
            return None
        return self.target.buildProtocol(addr)

    def doStop(self) -> None:
        if self.target is not None:
            self.target.doStop()
        super().doStop()


class CgtwistService(MultiService):
    """The whole server as one twistd service."""

    def __init__(self, cfg: BootstrapConfig, reactor: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.reactor = reactor
        self.settings = SettingsHolder()
        self.tls = ServerTLS(cfg.certificate, cfg.key)
        self.privileged = (
            (os.geteuid() == 0) if cfg.unprivileged_ports is None else not cfg.unprivileged_ports
        )
        self._late: list[tuple[ListenerSpec, LateFactory]] = []
        self.app: Optional[Components] = None  # once started
        self.listeners = ListenerManager(
            reactor,
            {p: self._maker for p in ("smtp", "pop3", "imap", "http")},
            self.tls,
            state_file=os.path.join(cfg.base_dir, "cgtwist.ports"),
        )
        self._control_port: Any = None
        self.changes: Any = None  # cgtwist.storage.notify.ChangeListener (PostgreSQL only)
        self.workers: Optional[SMTPWorkers] = None  # once started
        self.access_workers: Optional[IMAPWorkers] = None  # imap.workers, once started
        self.ready: defer.Deferred[None] = defer.Deferred()
        self._logfile: Optional[tuple[RotatingLogFile, list[filemodes.Change]]] = None
        self.runtime: Optional[Runtime] = None  # [server] runtime's pieces, once started

    # -- listeners ---------------------------------------------------------------------------
    def _maker(self, spec: ListenerSpec) -> protocol.Factory:
        if self.app is None:
            late = LateFactory()
            self._late.append((spec, late))
            return late
        return self.app.factory_for(spec)

    def _specs(self, settings: Settings) -> Optional[list[ListenerSpec]]:
        """The configured listeners; None (logged) when the stored setting is invalid.

        Never the built-in defaults instead: they would open ports (0.0.0.0:25 as root) that
        the administrator did not configure. The store validates the setting when it is set, so
        this takes a database edited by hand or by another version.
        """
        problem = settings.problems.get("listeners")
        if problem is not None:
            log.error(
                "invalid listeners setting ({err}); listeners left as they are (fix it "
                "with: cgtwist-admin settings set listeners ...)",
                err=problem,
            )
            return None
        return settings.listeners(self.privileged)

    def _apply_listeners(self, settings: Settings) -> defer.Deferred[None]:
        specs = self._specs(settings)
        return defer.succeed(None) if specs is None else self.listeners.apply(specs)

    def privilegedStartService(self) -> None:
        """Bind the configured listeners while we may still be root (twistd drops privileges
        right after), paused until start-up has finished.

        The listener setting is read from the configured store, SQLite or PostgreSQL. A store
        that cannot be read fails the start (twistd exits 1, so an init system retries it):
        binding the built-in defaults instead would open ports nobody configured, and the
        configured ones below 1024 could not be bound any more once root is dropped.
        """
        from cgtwist.storage.early import read_server_settings

        # twistd applies its own umask (0077 as a daemon, none with -n, or --umask) after
        # makeService; [server] umask is the one the server runs with.
        os.umask(self.cfg.umask)
        os.makedirs(self.cfg.base_dir, exist_ok=True)
        self._take_over_log_file()
        try:
            early = read_server_settings(
                self.cfg.database_url, self.cfg.database_timeout, self.cfg.node
            )
        except Exception as e:
            log.critical("cgtwist failed to start: {err}", err=str(e))
            raise
        specs = self._specs(Settings({k: v for k, v in early.items() if k == "listeners"}))
        if specs is None:
            raise ConfigError("cgtwist failed to start: the stored listeners setting is invalid")
        self.listeners.paused = True
        self.listeners.tls_ready = False
        self.listeners.bind_all(specs)
        super().privilegedStartService()

    # -- start / stop ------------------------------------------------------------------------
    def _start_runtime(self) -> None:
        """[server] runtime for this process (cgtwist.runtime): the reactor, direct writes,
        file threads, and twistd's observers with [log] level, then the log file's report."""
        from twisted.logger import globalLogPublisher

        self.runtime = Runtime(self.cfg.runtime, self.reactor)
        self.runtime.start_server(globalLogPublisher, self.cfg.log_level)
        if self._logfile is not None:
            self._report_log_file(*self._logfile)

    def _take_over_log_file(self) -> None:
        """Replace twistd's ``--logfile`` (rotated at 1 MB, every old file kept) by a
        RotatingLogFile ([log] max_size, daily, keep). Called in privilegedStartService:
        twistd opened the file as root, so it is reopened before root is dropped, and given,
        with its rotated copies, to the base directory's owner (the --uid user, who must
        rotate it later). The lines about it are logged by startService."""
        from twisted.logger import globalLogPublisher

        changed: list[filemodes.Change] = []

        def rotating(twistd_file: LogFile) -> RotatingLogFile:
            new, changes = self._rotating(twistd_file)
            changed.extend(changes)
            return new

        taken = logobservers.replace_log_file(globalLogPublisher, rotating)
        if taken is not None:
            self._logfile = (taken, changed)

    def _rotating(self, twistd_file: LogFile) -> tuple[RotatingLogFile, list[filemodes.Change]]:
        """A RotatingLogFile at twistd's path; existing log files lose the bits the umask
        forbids. SIGUSR1 rotates it, as twistd documents for its own."""
        cfg = self.cfg
        close_log_file(twistd_file)
        log_files = filemodes.log_paths(twistd_file.path)
        changed = filemodes.tighten(log_files, cfg.umask)
        rotating = RotatingLogFile(
            twistd_file.path, cfg.log_max_size, cfg.log_keep, cfg.log_daily, 0o666 & ~cfg.umask
        )
        if os.geteuid() == 0:
            owner = os.stat(cfg.base_dir)
            if owner.st_uid != 0:
                for path in log_files:
                    with contextlib.suppress(OSError):
                        os.chown(path, owner.st_uid, owner.st_gid)

        def usr1(signum: int, frame: Any) -> None:
            self.reactor.callFromThread(rotating.rotate)

        with contextlib.suppress(ValueError):  # not in the main thread (tests)
            signal.signal(signal.SIGUSR1, usr1)
        return rotating, changed

    def _report_log_file(self, logfile: RotatingLogFile, changed: list[filemodes.Change]) -> None:
        self._log_mode_changes(changed)
        cfg = self.cfg
        log.info(
            "log file {path}: rotated at {size} bytes{daily}, {keep} old files kept",
            path=logfile.path,
            size=cfg.log_max_size or "no size limit",
            daily=" and daily" if cfg.log_daily else "",
            keep=cfg.log_keep,
        )
        if not (os.access(logfile.directory, os.W_OK) and os.access(logfile.path, os.W_OK)):
            log.error(
                "log file {path} cannot be rotated: user {uid} may not write it or its "
                "folder {folder}; make both belong to the server's user",
                path=logfile.path,
                uid=os.geteuid(),
                folder=logfile.directory,
            )

    @staticmethod
    def _log_mode_changes(changed: list[filemodes.Change], limit: int = 20) -> None:
        """One line per tightened path (the first ``limit``), then how many more."""
        for path, old, new in changed[:limit]:
            log.warn(
                "file mode of {path} tightened from {old:04o} to {new:04o}",
                path=path,
                old=old,
                new=new,
            )
        if len(changed) > limit:
            log.warn(
                "file modes of {n} more paths tightened (domain and account directories)",
                n=len(changed) - limit,
            )

    def startService(self) -> None:
        self._start_runtime()
        # After Twisted installs its own handlers (during startup), replace them with ones
        # that do nothing in the handler but wake the reactor (cgtwist.runtime.stopsignals).
        self.reactor.callWhenRunning(StopSignals(self.reactor).install)
        super().startService()
        d = defer.ensureDeferred(self._start())

        def failed(f: Any) -> None:
            log.failure("cgtwist failed to start", f)
            exit_nonzero_at_exit()
            if self.reactor.running:
                self.reactor.stop()
            else:  # failed before twistd ran the reactor: stop it as soon as it runs
                self.reactor.callWhenRunning(self.reactor.stop)

        d.addErrback(failed)

    async def _start(self) -> None:
        from cgtwist.app import Components

        cfg = self.cfg
        await self._in_thread(make_base_dirs, cfg.base_dir)
        # Files made by an older version, or before the umask was set, lose the bits the
        # umask forbids (the store holds password hashes; account directories list accounts).
        self._log_mode_changes(
            await self._in_thread(filemodes.tighten_base, cfg.base_dir, cfg.umask)
        )
        if cfg.generated_certificate:
            names = [cfg.hostname, cfg.main_domain, "localhost"]
            await self._in_thread(ensure_certificate, cfg.certificate, cfg.key, names)
        self.tls.reload()
        self.listeners.tls_ready = True
        self.app = Components(
            cfg,
            self.reactor,
            self.settings,
            self.tls,
            listening=self.listeners.describe,
            log_file=self._logfile[0].path if self._logfile is not None else None,
        )
        await self.app.open()
        self._log_setting_changes()
        self.cfg = cfg = self.app.cfg  # the main domain may come from the store
        for spec, late in self._late:
            late.target = self.app.factory_for(spec)
        self._late.clear()
        await self.app.start()
        self._start_control()
        self._install_signals()
        await self._apply_listeners(self.settings.current)
        from cgtwist.app import shutdown_grace
        from cgtwist.smtpworker.supervisor import SMTPWorkers

        assert self.app.manager is not None  # app.start() built it
        self.workers = SMTPWorkers(
            self.reactor,
            cfg,
            adopt=self.app.manager.adopt,
            sweep=self.app.spool.incoming,
            count=self.app.spool.message_count,
            grace=lambda: shutdown_grace(self.settings.current),
            counted=self.app.statistics.add_forwarded if self.app.statistics else None,
        )
        self.access_workers = self._access_workers(self.app)
        await self._configure_workers(self.settings.current)

        def rebind(settings: Settings) -> None:
            d = self._apply_listeners(settings)
            d.addCallback(lambda _: self._configure_workers(settings))
            d.addErrback(lambda f: log.failure("applying the listener settings failed", f))

        self.settings.subscribe(rebind)
        self._listen_for_changes()
        self.listeners.resume()
        self.listeners._write_state()
        log.info(
            "cgtwist ready: main domain {domain}, base {base}, {n} listener(s)",
            domain=cfg.main_domain,
            base=cfg.base_dir,
            n=len(self.listeners.ports),
        )
        self.ready.callback(None)

    def _log_setting_changes(self) -> None:
        """Log each setting whose value a reload changed (cgtwist-admin, SIGHUP), one line per
        key with the old and new value, so the log shows when a change took effect."""
        last = [self.settings.current]
        self._log_setting_problems(last[0])

        def changed(new: Settings) -> None:
            for key, old, value in describe_changes(last[0], new):
                log.info("setting {key} applied: {old} -> {new}", key=key, old=old, new=value)
            self._log_setting_problems(new)
            last[0] = new

        self.settings.subscribe(changed)

    @staticmethod
    def _log_setting_problems(settings: Settings) -> None:
        """One error line per stored setting that failed its check when loaded (a database
        edited by hand or by another version): that setting keeps its default until fixed."""
        for key, problem in sorted(settings.problems.items()):
            log.error(
                "setting {key} in the store is not used: {problem} (fix it with: "
                "cgtwist-admin settings set|reset {key})",
                key=key,
                problem=problem,
            )

    def _access_workers(self, app: Components) -> IMAPWorkers:
        """The IMAP/POP3 worker processes (``imap.workers``), answered by the server's own
        counts: the per-IP connections, the login brake (not the counting wrapper: workers
        count their failures themselves), the sessions per account and IP, WebUser's list."""
        from cgtwist.app import shutdown_grace
        from cgtwist.imapworker.desk import AccessDesk
        from cgtwist.imapworker.locks import NotedGuard
        from cgtwist.imapworker.supervisor import IMAPWorkers
        from cgtwist.protocols.limits import UserIPSessions

        sessions, guard = app.user_sessions, app.account_guard
        # the server's own, not a worker's stand-ins
        assert isinstance(sessions, UserIPSessions) and isinstance(guard, NotedGuard)
        desk = AccessDesk(
            self.settings,
            is_client_ip=app.policy.is_client_ip,
            penalty=app.policy.auth_penalty,
            sessions=sessions,
            active=app.active_sessions,
            guard=guard,
            counted=app.statistics.add_forwarded if app.statistics else None,
        )
        return IMAPWorkers(
            self.reactor, self.cfg, desk, grace=lambda: shutdown_grace(self.settings.current)
        )

    def _configure_workers(self, settings: Settings) -> defer.Deferred[None]:
        """Hand the SMTP sockets to ``smtp.workers`` worker processes and the IMAP and POP3
        sockets to ``imap.workers`` ones (0: accept here)."""
        assert self.workers is not None and self.access_workers is not None
        n = settings.smtp.workers
        m = settings.imap.workers
        self.listeners.delegate(
            frozenset(({"smtp"} if n else set()) | ({"imap", "pop3"} if m else set()))
        )
        access = sorted(
            self.listeners.sockets("imap") + self.listeners.sockets("pop3"), key=lambda s: s[0]
        )
        return defer.gatherResults(
            [
                self.workers.configure(n, self.listeners.sockets("smtp") if n else []),
                self.access_workers.configure(m, access if m else []),
            ],
            consumeErrors=True,
        ).addCallback(lambda _: None)

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
        assert self.app is not None
        handlers = dict(self.app.control_handlers())
        handlers["reload"] = lambda req: defer.ensureDeferred(self._control_reload(req))
        handlers["status"] = lambda req: {"listeners": self.listeners.describe()}
        if len(os.fsencode(sock)) > 100:  # sockaddr_un.sun_path is 108 bytes on Linux
            log.error(
                "control socket {path} is too long a path for a UNIX socket; cgtwist-admin "
                "changes will apply on SIGHUP or restart (use a shorter base directory)",
                path=sock,
            )
            return
        old = os.umask(0o077)
        try:
            self._control_port = self.reactor.listenUNIX(sock, ControlFactory(handlers), mode=0o600)
        finally:
            os.umask(old)

    async def _control_reload(self, req: Any) -> dict[str, Any]:
        """Re-read the store; answer with each listener's outcome once the listener change
        the new settings started has been applied (bound, or why not), so cgtwist-admin can
        report a port it could not bind instead of the log alone. The changes it names are
        logged here with who made them (the command's own process has no log)."""
        changes = req.get("changes")
        for change in changes[:100] if isinstance(changes, list) else ():
            log.info(
                "change by {actor}: {change}",
                actor=str(req.get("by") or "cgtwist-admin")[:100],
                change=str(change)[:300],
            )
        await self.reload_settings()
        await self.listeners.settled()
        return {"listeners": self.listeners.describe()}

    def _listen_for_changes(self) -> None:
        """On PostgreSQL, reload settings (and so drop every cache of store facts) whenever a
        node announces a change that concerns this node (docs/CLUSTER.md)."""
        from cgtwist.storage.notify import Coalesced, listener_for

        self._reloads = Coalesced(self.reload_settings, "reloading settings after a change")
        assert self.app is not None
        self.changes = listener_for(self.app.store.db, self.reactor, self._changed)
        if self.changes is not None:
            self.changes.start()

    def _changed(self, change: Any) -> None:
        if not change.concerns(self.cfg.node):
            log.debug(
                "node {node} changed its {what}: nothing to do here",
                node=change.node,
                what=change.what,
            )
            return
        if not change.resync:
            log.info(
                "{what} by node {origin}: reloading settings and caches",
                what=change.what,
                origin=change.origin,
            )
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
            lambda f: log.failure("settings reload failed", f)
        )

    def stopService(self) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        log.info("cgtwist stopping: no new connections, finishing transactions in flight")
        self.listeners.pause()
        if self.changes is not None:
            self.changes.stop()
        workers = defer.gatherResults(
            [w.stop() for w in (self.workers, self.access_workers) if w is not None],
            consumeErrors=True,
        )
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


def make_base_dirs(base_dir: str) -> None:
    """(blocking) The base directory's Queue/, Domains/ and Submitted/, made durably where
    missing (``durable.make_dirs``: each new name fsynced in its parent, so a power cut
    cannot lose a folder with the mail later put in it), in a thread at start. Mode 0o777
    under the umask (``[server] umask``), as ``os.makedirs`` made them."""
    for sub in (paths.QUEUE_DIR, paths.DOMAINS_DIR, paths.SUBMITTED_DIR):
        make_dirs(os.path.join(base_dir, sub), 0o777)


def exit_nonzero_at_exit() -> None:
    """Make this process's exit status 1 once twistd has finished.

    twistd exits 0 whenever its reactor stopped, also after a start-up that failed once the
    reactor ran (the store could not be opened, the spool not created): systemd's
    ``Restart=on-failure`` would never try again. The exit handler runs after twistd removed
    its pid file and closed its log.
    """

    def exit_one() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(1)

    atexit.register(exit_one)


def build(cfg: BootstrapConfig, reactor: Any) -> CgtwistService:
    return CgtwistService(cfg, reactor)
