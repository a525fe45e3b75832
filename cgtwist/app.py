"""Composition of the running server's parts, once the store is open.

Part of the composition root with cgtwist.service (which owns the process lifecycle,
listeners and signals): this module only constructs and connects the concrete components —
store, Router, resolver, protection policy, spool, queue manager and delivery agents (LIST
with its timer among them), mail
store, cred portal and the protocol factories — and closes them in reverse order.

Wiring runs one way: every collaborator arrives through a constructor, built before the object
that uses it. New mail reaches the queue through the spool's subscription (``Spool.subscribe``),
never through a reference from the receiving side to the queue: the queue manager subscribes
here, in the server; an SMTP worker process (cgtwist.smtpworker.child) opens only the receiving half and
subscribes its link to the server instead.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping, Optional, cast

from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from cgtwist.activesessions import ActiveSessions
from cgtwist.checks.accountguard import AccountGuard
from cgtwist.config import BootstrapConfig
from cgtwist.core.account_limits import AccountLimits
from cgtwist.core.auth import AccountChecker, IAccountGuard
from cgtwist.core.policy import BasicPolicy
from cgtwist.core.protection import ProtectedPolicy
from cgtwist.core.routing import Routing
from cgtwist.core.rules import RulesRunner, existing_mailboxes
from cgtwist.core.rules_receive import ReceptionRules
from cgtwist.core.submission import Submission
from cgtwist.delivery.bounce import Bouncer
from cgtwist.delivery.group import GroupDelivery
from cgtwist.delivery.listagent import ListAgent, load_secret
from cgtwist.delivery.listtimer import ListTimer
from cgtwist.delivery.local import LocalDelivery
from cgtwist.delivery.pipe import PipeDelivery
from cgtwist.delivery.smtp import SMTPDelivery
from cgtwist.delivery.submitted import SubmittedPickup
from cgtwist.dns import Resolver, system_nameservers
from cgtwist.errors import NotFound
from cgtwist.imapworker.locks import NotedGuard
from cgtwist.interfaces import IAuthPenalty, IStatistics
from cgtwist.logs import Logger
from cgtwist.mailstore.notifier import MailboxNotifier
from cgtwist.outworker.agent import WorkerSMTPDelivery
from cgtwist.outworker.supervisor import OutboundWorkers
from cgtwist.protocols.imap import IMAPFactory
from cgtwist.protocols.limits import (
    ConnectionCounter,
    SessionCounter,
    SessionList,
    UserIPSessions,
)
from cgtwist.protocols.pop3 import POP3Factory
from cgtwist.protocols.realm import MailRealm
from cgtwist.protocols.smtp import SMTPFactory
from cgtwist.queue.admin import QueueAdmin
from cgtwist.queue.attempts import AttemptLog
from cgtwist.queue.manager import QueueManager
from cgtwist.runtime.threadpool import WorkerPool, file_pool
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.spool.spool import REMOVE_LINGER, Spool, make_layout
from cgtwist.stats import CountedPenalty, Statistics, queue_figures
from cgtwist.storage.credcache import CredentialCache
from cgtwist.storage.lists import ListStore
from cgtwist.storage.passwords import PasswordHasher
from cgtwist.storage.rulehistory import RuleHistory
from cgtwist.storage.rules import RuleStore
from cgtwist.storage.store import open_store
from cgtwist.types import ListenerSpec

log = Logger(namespace="cgtwist")


@dataclass(frozen=True)
class SharedAccess:
    """Where an IMAP/POP3 worker process (cgtwist.imapworker.child) counts what the server
    counts for every process: the login brake, sessions per account and IP, WebUser's list of
    sessions and the account locks (cgtwist.imapworker.remote: each asks the server over the pipe)."""

    penalty: IAuthPenalty
    sessions: SessionCounter
    active: SessionList
    guard: IAccountGuard


def shutdown_grace(settings: Settings) -> float:
    """``server.shutdown_grace`` in seconds."""
    return float(settings.server.shutdown_grace)


class Components:
    """Every long-lived object of one server, built from the bootstrap config.

    ``open()`` builds the whole server; ``open_reception()`` only what receiving needs, for an
    SMTP worker process (cgtwist.smtpworker.child), whose spool stores into ``Queue/incoming/`` and
    announces to the subscriber the worker gives it (its link to the server). The parts of the
    half not built stay None.
    """

    def __init__(
        self,
        cfg: BootstrapConfig,
        reactor: Any,
        settings: SettingsHolder,
        tls: Any,
        listening: Callable[[], list[dict[str, Any]]] = list,
        log_file: Optional[str] = None,
        stats: Optional[IStatistics] = None,
        shared: Optional[SharedAccess] = None,
    ) -> None:
        """``listening``: the bound listeners (cgtwist.listeners.ListenerManager.describe),
        for the web panel; ``log_file``: the server's log file (twistd's ``--logfile``), for
        its log viewer; ``stats``: where an SMTP worker counts (cgtwist.stats.ForwardedCounts;
        the server makes its own Statistics in ``open``); ``shared``: an IMAP worker's
        stand-ins for the server's own login brake and session counts."""
        self.cfg = cfg
        self.shared = shared
        self.reactor = reactor
        self.settings = settings
        self.tls = tls
        self.listening = listening
        self.log_file = log_file
        self.web: Any = None  # cgtwist.web.panel.WebPanel, built for the first http listener
        # where counting parts count; the server's own figures (for the web) in statistics
        self.stats: Optional[IStatistics] = stats
        self.statistics: Optional[Statistics] = None
        self.store: Any = None
        self.factories: list[Any] = []
        self._pools: list[Any] = []  # ThreadPool or WorkerPool: start() and stop()
        # the receiving half (server and worker)
        self.resolver: Optional[Resolver] = None
        self.notifier: Optional[MailboxNotifier] = None
        # the delivering half (server only)
        self.manager: Optional[QueueManager] = None
        self.admin: Optional[QueueAdmin] = None
        self.smtp_out: Optional[SMTPDelivery] = None
        self.outbound: Optional[OutboundWorkers] = None  # smtp.delivery_workers
        self.pickup: Optional[SubmittedPickup] = None
        self.list_timer: Optional[ListTimer] = None
        self.rule_history: Optional[RuleHistory] = None

    def _pool(self, name: str, maximum: int) -> ThreadPool:
        pool = ThreadPool(0, maximum, name)
        pool.start()
        self._pools.append(pool)
        return pool

    def _workers(self, name: str, size: int) -> WorkerPool | ThreadPool:
        """Threads for blocking file work on the mail path (spool, Maildir): a lean pool,
        one queue put per job instead of ThreadPool's lock hand-offs on the reactor
        (Twisted's ThreadPool with ``[server] runtime = plain``)."""
        pool = file_pool(size, name, tuned=self.cfg.runtime == "tuned")
        pool.start()
        self._pools.append(pool)
        return pool

    def _hasher(self) -> PasswordHasher:
        """argon2 on its own pool sized to the cores (more at once only queue in the kernel and
        hold 19 MiB each), behind the verified-credential cache, emptied on every reload."""
        cores = os.cpu_count() or 1
        cache = CredentialCache(self.settings, self.reactor)
        self.settings.subscribe(lambda _s: cache.clear())
        return PasswordHasher(
            self.reactor,
            threadpool=self._pool("cgtwist-auth", cores),
            concurrency=cores,
            cache=cache,
        )

    async def _open_store(self) -> Any:
        cfg = self.cfg
        self.store = await open_store(
            cfg.database_url,
            cfg.main_domain,
            self.reactor,
            cfg.pool_min,
            cfg.pool_max,
            hasher=self._hasher(),
            timeout=cfg.database_timeout,
            node=cfg.node,
        )
        return self.store

    async def open(self) -> None:
        """The server: open the store (migrations, first-start accounts), then build
        everything on it, the queue manager subscribed to the spool."""
        store = await self._open_store()
        cfg = self.cfg
        main = await store.settle_main_domain(cfg.main_domain, cfg.main_domain_explicit)
        if main != cfg.main_domain:
            self.cfg = cfg = dataclasses.replace(cfg, main_domain=main)
        password = await store.bootstrap()
        await store.register_node(cfg.hostname)
        if password:
            # Printed once, on first start only: the administrator must record it.
            log.warn(
                "first start: created postmaster@{domain} with password {password} "
                "(change it with: cgtwist-admin account passwd postmaster@{domain})",
                domain=cfg.main_domain,
                password=password,
            )
        await self.reload_settings()
        await self._spool_layout()
        self.statistics = Statistics(self.reactor, queue=lambda: queue_figures(self.manager))
        self.stats = self.statistics
        self._build_reception(store, self.settings, incoming=False)
        self._build_delivery(store, self.settings)

    async def open_reception(self) -> None:
        """An SMTP worker process: open the store (the server settled the main domain and
        made the accounts) and build only the receiving half over ``Queue/incoming/``."""
        store = await self._open_store()
        await self.reload_settings()
        await self._spool_layout()
        self._build_reception(store, self.settings, incoming=True)

    async def reload_settings(self) -> None:
        """Read the dynamic settings from the store into the shared holder; every part reads
        them from there at use, so they apply at once (start, SIGHUP, cgtwist-admin, and the
        server's ``R`` to an SMTP worker)."""
        self.settings.replace(Settings(await self.store.get_settings()))

    async def _spool_layout(self) -> None:
        """The spool's directories, made in a thread before the Spool is built: on a new base
        directory that is a syncfs and a directory fsync each, never for the reactor."""
        await deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), make_layout, self.cfg.base_dir
        )

    def _build_reception(self, store: Any, settings: SettingsHolder, incoming: bool) -> None:
        """Resolver, Router, protection policy, spool, submission and cred portal: what SMTP
        receiving needs, in the server and in each SMTP worker process (``incoming``: the
        spool stores into ``Queue/incoming/``, which the server adopts from)."""
        cfg, reactor = self.cfg, self.reactor
        nameservers = list(cfg.nameservers) or system_nameservers()
        self.resolver = Resolver(
            nameservers, timeout=cfg.dns_timeout, max_concurrency=100, reactor=reactor
        )
        self.lists = ListStore(store.db)
        self.routing = Routing(store, settings, cfg.main_domain, lists=self.lists)
        self.limits = AccountLimits(store, settings)
        # The Server Rules that Reject or Discard answer before the 250, here and in each
        # SMTP worker process: their own runner over the shared store (routes, Client IPs).
        self.rule_store = RuleStore(store.db, cfg.node)
        receive_rules = RulesRunner(
            self.rule_store,
            store,
            settings,
            clock=reactor,
            hostname=cfg.hostname,
            submission=None,
            route=self.routing.route,
            is_client_ip=lambda ip: self.policy.is_client_ip(ip),
        )
        settings.subscribe(lambda _s: receive_rules.forget())  # cgtwist-admin rules set reloads
        self.policy = ProtectedPolicy(
            BasicPolicy(self.routing, settings, accounts=store, limits=self.limits),
            self.resolver,
            settings,
            reactor,
            reactor=reactor,
            hostname=cfg.hostname,
            threadpool=self._pool("cgtwist-spf", 8),
            is_local_domain=self.routing.is_local_domain,
            message_rules=ReceptionRules(receive_rules),
        )
        # Every login of every protocol (and the web) passes this one brake: failures are
        # counted there.
        shared = self.shared
        brake = shared.penalty if shared is not None else self.policy.auth_penalty
        self.penalty: IAuthPenalty = (
            CountedPenalty(brake, self.stats) if self.stats is not None else brake
        )
        self.io_pool = io_pool = self._workers("cgtwist-io", 16)
        self.spool = Spool(
            cfg.base_dir,
            reactor,
            threadpool=io_pool,  # type: ignore[arg-type]
            incoming=incoming,
            remove_linger=REMOVE_LINGER,
        )
        self.notifier = MailboxNotifier(
            reactor=reactor,
            threadpool=io_pool,
            hostname=cfg.hostname,
            tombstones_kept=lambda: settings.current.imap.tombstones_kept,
        )
        self.submission = Submission(self.spool, settings, reactor)
        self.realm = MailRealm(
            cfg.base_dir, store, self.notifier, cfg.main_domain, limits=self.limits
        )
        # One per-account failure budget behind the one checker every login goes through.
        # (the server's tells its IMAP workers of each lock: cgtwist.imapworker.locks)
        self.account_guard: IAccountGuard = (
            shared.guard
            if shared is not None
            else NotedGuard(AccountGuard(reactor, settings), reactor, settings)
        )
        self.portal = Portal(
            self.realm,
            [
                AccountChecker(
                    store,
                    is_client_ip=self.policy.is_client_ip,
                    guard=self.account_guard,
                    router=self.routing,
                )
            ],
        )
        self.user_sessions: SessionCounter = (
            shared.sessions if shared is not None else UserIPSessions(settings)
        )
        # The IMAP, POP3 and SMTP sessions logged in now, which WebUser lists and ends.
        self.active_sessions = ActiveSessions(reactor.seconds)
        self.session_list: SessionList = (
            shared.active if shared is not None else self.active_sessions
        )

    def _build_delivery(self, store: Any, settings: SettingsHolder) -> None:
        """The queue manager, delivery agents, Rules, bounces and the Submitted/ pickup: the
        server's own half, never built in an SMTP worker process.

        Built bottom up, so each part gets its collaborators in its constructor: bounces go
        back in through the submission; the SMTP agent notes its host-level attempts in an
        AttemptLog the queue manager journals from; the Rules runner (Server Rules for the
        manager, Domain and Account Rules for LOCAL) comes before both; the manager takes the
        agents, that log, the rules and the bouncer's three reports, then subscribes to the
        spool."""
        cfg, reactor, io_pool = self.cfg, self.reactor, self.io_pool
        pipe = PipeDelivery(settings, reactor)
        # WorkerPool offers the part of ThreadPool that deferToThreadPool uses.
        history_pool = cast(ThreadPool, io_pool)
        self.rule_history = RuleHistory(
            cfg.base_dir,
            settings,
            reactor,
            lambda job: deferToThreadPool(reactor, history_pool, job),
        )
        self.rules = RulesRunner(
            self.rule_store,
            store,
            settings,
            clock=reactor,
            hostname=cfg.hostname,
            submission=self.submission,
            route=self.routing.route,
            is_client_ip=self.policy.is_client_ip,
            mailboxes=existing_mailboxes(cfg.base_dir, reactor, io_pool),
            execute=pipe.deliver,
            history=self.rule_history,
        )
        settings.subscribe(lambda _s: self.rules.forget())  # cgtwist-admin rules set reloads
        local = LocalDelivery(
            cfg.base_dir,
            store,
            self.notifier,
            reactor=reactor,
            threadpool=io_pool,
            hostname=cfg.hostname,
            rules=self.rules.local_rules,
            limits=self.limits,  # quota.storage/messages/grace, with the IMAP sessions' count:
            usage=self.notifier.usage if self.notifier is not None else None,
        )
        settings.subscribe(lambda _s: local.forget())  # accounts changed: cgtwist-admin reloads
        attempts = AttemptLog(self.spool, reactor)
        self.smtp_out = SMTPDelivery(
            self.resolver,  # type: ignore[arg-type]
            settings,
            cfg.hostname,
            reactor,
            on_attempt=attempts.note,
        )
        # smtp.delivery_workers: the SMTP sessions in worker processes, the in-process agent
        # above while none runs; started by start(), following the setting on every reload.
        self.outbound = OutboundWorkers(
            reactor, cfg, settings, grace=lambda: shutdown_grace(settings.current)
        )
        smtp_agent = WorkerSMTPDelivery(self.outbound, self.smtp_out, on_attempt=attempts.note)
        self.bouncer = Bouncer(self.submission, cfg.hostname, reactor, settings)
        self.list_agent = ListAgent(
            self.lists,
            self.submission,
            settings,
            load_secret(cfg.base_dir),
            cfg.hostname,
            reactor,
            archive=local.store_in,
        )
        self.list_timer = ListTimer(self.lists, self.list_agent, settings, reactor)
        self.manager = manager = QueueManager(
            self.spool,
            self.routing,
            {
                "LOCAL": local,
                "SMTP": smtp_agent,
                "PIPE": pipe,
                "LIST": self.list_agent,
                "GROUP": GroupDelivery(store, self.submission),
            },
            settings,
            reactor,
            bouncer=self.bouncer.bounce,
            delay_warning=self.bouncer.delay_warning,
            on_delivered=self.bouncer.delivered,
            attempts=attempts,
            server_rules=self.rules.server_rules,
            stats=self.stats,
        )
        self.spool.subscribe(manager.enqueue)
        self.admin = QueueAdmin(manager)
        self.pickup = SubmittedPickup(
            cfg.base_dir,
            self.submission,
            reactor,
            settings,
            threadpool=io_pool,
            hostname=cfg.hostname,
        )

    def factory_for(
        self, spec: ListenerSpec, per_ip: Optional[ConnectionCounter] = None
    ) -> Factory:
        """A new protocol factory for one listener socket; ``per_ip``: an IMAP worker's
        count of POP3 and IMAP connections, which the server admitted."""
        common: dict[str, Any] = dict(
            settings=self.settings,
            portal=self.portal,
            tls=self.tls,
            hostname=self.cfg.hostname,
            clock=self.reactor,
            penalty=self.penalty,
            stats=self.stats,
        )
        factory: Any
        if spec.protocol == "smtp":
            factory = SMTPFactory(
                spec,
                policy=self.policy,
                submission=self.submission,
                active=self.active_sessions,
                **common,
            )
        elif spec.protocol == "pop3":
            factory = POP3Factory(spec, **common, **self._access(per_ip))
        elif spec.protocol == "imap":
            factory = IMAPFactory(spec, **common, **self._access(per_ip))
        elif spec.protocol == "http":
            return self._web_panel().site(spec)  # type: ignore[no-any-return]
        else:
            raise ValueError(f"no {spec.protocol} service")
        self.factories.append(factory)
        return factory  # type: ignore[no-any-return]

    def _web_panel(self) -> Any:
        """WebAdmin and WebUser (cgtwist.web), one for every http listener: sessions work on
        each. Logins go through the mail protocols' checker and AuthPenalty; changes through
        the admin operations, applied here at once (a reload, as cgtwist-admin asks for)."""
        if self.web is None:
            from twisted.cred.credentials import IUsernamePassword

            from cgtwist.admin import Admin
            from cgtwist.admin.quota import counted_usage, maildir_usage
            from cgtwist.web.panel import WebPanel

            cfg = self.cfg
            # in_thread(fn, *args): blocking work off the reactor
            in_thread = partial(deferToThreadPool, self.reactor, self.reactor.getThreadPool())
            admin = Admin(
                self.store,
                cfg.main_domain,
                cfg.node,
                changed=lambda _what, _change: defer.ensureDeferred(self.reload_settings()),
                call=self._control_call,
                actor="web",
                clock=self.reactor,
                hostname=cfg.hostname,
                mailboxes=existing_mailboxes(cfg.base_dir, self.reactor, self.io_pool),
                # the quota is shown with the count it is enforced with
                usage=counted_usage(self.notifier.usage, cfg.base_dir)
                if self.notifier is not None
                else maildir_usage(cfg.base_dir, in_thread),
            )
            self.web = WebPanel(
                store=self.store,
                admin=admin,
                settings=self.settings,
                clock=self.reactor,
                checker=self.portal.checkers[IUsernamePassword],
                penalty=self.penalty,
                is_client_ip=self.policy.is_client_ip,
                listening=self.listening,
                main_domain=cfg.main_domain,
                hostname=cfg.hostname,
                in_thread=in_thread,
                unsubscribe=self.list_agent.one_click,
                stats=self.statistics,
                log_file=self.log_file,
                active=self.active_sessions,
            )
        return self.web

    async def _control_call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """A control command (cgtwist.control) run in this process, for the web's queue page."""
        from cgtwist.admin import AdminError

        handler = self.control_handlers().get(cmd)
        if handler is None:
            raise AdminError(f"unknown command {cmd}")
        try:
            result = await defer.maybeDeferred(handler, args)
        except KeyError as e:  # no such message
            raise AdminError(str(e.args[0]) if e.args else "no such message") from None
        return dict(result or {})

    def _access(self, per_ip: Optional[ConnectionCounter]) -> dict[str, Any]:
        """What every POP3 and IMAP factory shares beyond ``common``: the Client IP test (they
        are exempt from per-IP connection caps), one count of sessions per account and IP, and
        the list of logged-in sessions WebUser shows."""
        return {
            "is_client_ip": self.policy.is_client_ip,
            "sessions": self.user_sessions,
            "active": self.session_list,
            "per_ip": per_ip,
        }

    async def start(self) -> None:
        """Recover the spool and start delivering; pick up PIPE submissions (server only)."""
        assert self.manager is not None and self.pickup is not None, "open() builds them"
        if self.outbound is not None:  # before the queue, which hands them its attempts
            self.settings.subscribe(self.outbound.settings_changed)
            await self.outbound.configure(self.settings.current.smtp.delivery_workers)
        self.watch_mailboxes()
        count = await self.manager.start()
        log.info("queue started: {count} message(s) recovered from the spool", count=count)
        self.pickup.startService()
        if self.list_timer is not None:
            self.list_timer.start()

    def watch_mailboxes(self) -> None:
        """Push other processes' changes (IMAP workers, ``cgtwist-admin``, and for a worker
        the server's LOCAL delivery) to this process's sessions at once: the mail store's
        inotify watch on the folders a session has open here, bounded by imap.watch_folders,
        the rest checked every imap.watch_poll_interval seconds. The shutdown flush closes
        it. Without it a session hears of another process's change at its next command."""
        assert self.notifier is not None, "open() builds it"
        current = self.settings

        self.notifier.watch_other_processes(
            max_folders=lambda: current.current.imap.watch_folders,
            poll_interval=lambda: current.current.imap.watch_poll_interval,
        )

    def control_handlers(self) -> Mapping[str, Callable[[Mapping[str, Any]], Any]]:
        assert self.admin is not None, "open() builds it"
        handlers = dict(self.admin.control_handlers())
        handlers["list-decide"] = lambda req: defer.ensureDeferred(self._list_decide(req))
        return handlers

    async def _list_decide(self, req: Mapping[str, Any]) -> dict[str, Any]:
        """``cgtwist-admin list approve|reject``: the server's LIST agent distributes an
        approved post (through the spool) or tells the poster of a rejected one."""
        lst = await self.lists.get_list(str(req["list"]))
        if lst is None:
            raise NotFound(f"no such list: {req['list']}")
        decided = await self.list_agent.decide(
            lst, str(req["id"]), bool(req.get("approve")), str(req.get("reason") or "")
        )
        if not decided:
            raise NotFound(f"no held message {req['id']} on {lst.address}")
        return {}

    async def drain(self) -> None:
        """Stop sessions: SMTP transactions in flight finish, idle sessions get 421/BYE.

        After ``server.shutdown_grace`` seconds whatever is still open is aborted: a client
        that never reads (or never answers TLS close_notify) must not hold up a SIGTERM for ever.
        """
        grace = shutdown_grace(self.settings.current)
        ds = [defer.maybeDeferred(f.shutdown) for f in self.factories if hasattr(f, "shutdown")]
        closed: defer.Deferred[Any] = defer.gatherResults(ds, consumeErrors=True)
        deadline: defer.Deferred[Any] = defer.Deferred()
        timer = self.reactor.callLater(grace, deadline.callback, None)
        await defer.DeferredList([closed, deadline], fireOnOneCallback=True, consumeErrors=True)
        if timer.active():
            timer.cancel()
            return
        n = self.abort_sessions()
        log.warn(
            "shutdown: {n} session(s) still open after {grace}s; aborted them", n=n, grace=grace
        )

    def abort_sessions(self) -> int:
        """Cut every client session now (no reply); returns how many there were."""
        left = [p for f in self.factories for p in list(getattr(f, "live", None) or ())]
        for proto in left:
            transport = getattr(proto, "transport", None)
            if transport is not None and hasattr(transport, "abortConnection"):
                transport.abortConnection()
        return len(left)

    async def close(self) -> None:
        """Stop the queue and pickup, then the resolver, thread pools and store.

        Also after an ``open`` that failed half-way (an SMTP worker stopped while starting),
        and in a worker, which builds no delivering half: only what was built is closed."""
        if self.pickup is not None:
            await defer.maybeDeferred(self.pickup.stopService)
        if self.smtp_out is not None:
            self.smtp_out.close_idle()
            self.smtp_out.abort_all()
        if self.outbound is not None:
            # their sessions in flight are aborted (answered pending) before the queue stops
            await self.outbound.stop()
        if self.list_timer is not None:
            await self.list_timer.stop()
        if self.manager is not None:
            await self.manager.stop()
        if self.notifier is not None:
            # names replaced by IMAP flag changes, while the disk threads run
            await self.notifier.flush()
        if self.rule_history is not None:
            await self.rule_history.close()  # the Rules' history lines still gathered
        if self.resolver is not None:
            await defer.maybeDeferred(self.resolver.stop)
        for pool in self._pools:
            pool.stop()
        if self.store is not None:
            self.store.close()
