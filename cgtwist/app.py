"""Composition of the running server's parts, once the store is open.

Part of the composition root with cgtwist.service (which owns the process lifecycle,
listeners and signals): this module only constructs and connects the concrete components —
store, Router, resolver, protection policy, spool, queue manager and delivery agents, mail
store, cred portal and the protocol factories — and closes them in reverse order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.python.threadpool import ThreadPool

from cgtwist.config import BootstrapConfig
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder
from cgtwist.types import ListenerSpec

log = Logger(namespace="cgtwist")


def shutdown_grace(settings: Any) -> float:
    """``server.shutdown_grace`` in seconds (a stored value is validated; be safe anyway)."""
    try:
        return max(0.0, float(settings["server.shutdown_grace"]))
    except (KeyError, TypeError, ValueError):
        return 30.0


class Components:
    """Every long-lived object of one server, built from the bootstrap config."""

    def __init__(
        self,
        cfg: BootstrapConfig,
        reactor: Any,
        settings: SettingsHolder,
        tls: Any,
        link: Any = None,
    ) -> None:
        """``link``: set in an SMTP worker process (cgtwist.smtpworker.child), the pipe to the server that
        takes each stored message (``enqueue``); such a process builds only what receiving
        needs (no queue, no delivery) and stores into ``Queue/incoming/``."""
        self.cfg = cfg
        self.reactor = reactor
        self.settings = settings
        self.tls = tls
        self.link = link
        self.store: Any = None
        self.factories: list[Any] = []
        self._pools: list[Any] = []  # ThreadPool or WorkerPool: start() and stop()

    def _pool(self, name: str, maximum: int) -> ThreadPool:
        pool = ThreadPool(0, maximum, name)
        pool.start()
        self._pools.append(pool)
        return pool

    def _workers(self, name: str, size: int) -> Any:
        """Threads for blocking file work on the mail path (spool, Maildir): a lean pool,
        one queue put per job instead of ThreadPool's lock hand-offs on the reactor
        (Twisted's ThreadPool with ``[server] runtime = plain``)."""
        from cgtwist.runtime.threadpool import file_pool

        pool = file_pool(size, name, tuned=self.cfg.runtime == "tuned")
        pool.start()
        self._pools.append(pool)
        return pool

    async def open(self) -> None:
        """Open the store (migrations, first-start accounts), then build everything on it."""
        from cgtwist.storage.store import open_store

        cfg, reactor, settings = self.cfg, self.reactor, self.settings
        self.store = store = await open_store(
            cfg.database_url,
            cfg.main_domain,
            reactor,
            cfg.pool_min,
            cfg.pool_max,
            timeout=cfg.database_timeout,
            node=cfg.node,
        )
        if self.link is not None:  # the server settled the main domain and made the accounts
            await self.reload_settings()
            self._build_reception(store, settings)
            return
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
        self._build_reception(store, settings)
        self._build_delivery(store, settings)

    async def reload_settings(self) -> None:
        """Read the dynamic settings from the store into the shared holder; every part reads
        them from there at use, so they apply at once (start, SIGHUP, cgtwist-admin, and the
        server's ``R`` to an SMTP worker)."""
        from cgtwist.settings import Settings

        self.settings.replace(Settings(await self.store.get_settings()))

    def _build_reception(self, store: Any, settings: SettingsHolder) -> None:
        """Resolver, Router, protection policy, spool, submission and cred portal: what SMTP
        receiving needs, in the server and in each SMTP worker process."""
        from cgtwist.checks.accountguard import AccountGuard
        from cgtwist.core.auth import AccountChecker
        from cgtwist.core.policy import BasicPolicy
        from cgtwist.core.protection import ProtectedPolicy
        from cgtwist.core.routing import Routing
        from cgtwist.core.submission import Submission
        from cgtwist.dns import Resolver, system_nameservers
        from cgtwist.mailstore.notifier import MailboxNotifier
        from cgtwist.protocols.limits import UserIPSessions
        from cgtwist.protocols.realm import MailRealm
        from cgtwist.spool.spool import REMOVE_LINGER, Spool

        cfg, reactor = self.cfg, self.reactor
        nameservers = list(cfg.nameservers) or system_nameservers()
        self.resolver = Resolver(
            nameservers, timeout=cfg.dns_timeout, max_concurrency=100, reactor=reactor
        )
        self.routing = Routing(store, settings, cfg.main_domain)
        self.policy = ProtectedPolicy(
            BasicPolicy(self.routing, settings, accounts=store),
            self.resolver,
            settings,
            reactor,
            reactor=reactor,
            hostname=cfg.hostname,
            threadpool=self._pool("cgtwist-spf", 8),
        )
        self.policy.is_local_domain = self.routing.is_local_domain
        self.io_pool = io_pool = self._workers("cgtwist-io", 16)
        self.spool = Spool(
            cfg.base_dir,
            reactor,
            threadpool=io_pool,
            incoming=self.link is not None,
            remove_linger=REMOVE_LINGER,
        )
        self.notifier = MailboxNotifier(reactor=reactor, threadpool=io_pool, hostname=cfg.hostname)
        self.submission = Submission(self.spool, self.link, settings, reactor)
        self.realm = MailRealm(cfg.base_dir, store, self.notifier, cfg.main_domain)
        # One per-account failure budget behind the one checker every login goes through.
        self.account_guard = AccountGuard(reactor, settings)
        self.portal = Portal(
            self.realm,
            [
                AccountChecker(
                    store, is_client_ip=self.policy.is_client_ip, guard=self.account_guard
                )
            ],
        )
        self.user_sessions = UserIPSessions(settings)

    def _build_delivery(self, store: Any, settings: SettingsHolder) -> None:
        """The queue manager, delivery agents, bounces and the Submitted/ pickup: the server's
        own half, never built in an SMTP worker process."""
        from cgtwist.delivery.bounce import Bouncer
        from cgtwist.delivery.local import LocalDelivery
        from cgtwist.delivery.pipe import PipeDelivery
        from cgtwist.delivery.smtp import SMTPDelivery
        from cgtwist.delivery.submitted import SubmittedPickup
        from cgtwist.queue.manager import QueueManager

        cfg, reactor, io_pool = self.cfg, self.reactor, self.io_pool
        self.smtp_out = SMTPDelivery(self.resolver, settings, cfg.hostname, reactor)
        local = LocalDelivery(
            cfg.base_dir,
            store,
            self.notifier,
            reactor=reactor,
            threadpool=io_pool,
            hostname=cfg.hostname,
        )
        settings.subscribe(lambda _s: local.forget())  # accounts changed: cgtwist-admin reloads
        agents = {
            "LOCAL": local,
            "SMTP": self.smtp_out,
            "PIPE": PipeDelivery(settings, reactor),
        }
        self.manager = QueueManager(self.spool, self.routing, agents, settings, reactor)
        self.smtp_out.on_attempt = self.manager.note_attempt
        self.submission.manager = self.manager
        self.bouncer = Bouncer(self.submission, cfg.hostname, reactor, settings)
        self.manager.bouncer = self.bouncer.bounce
        self.manager.delay_warning = self.bouncer.delay_warning
        self.manager.on_delivered = self.bouncer.delivered
        self.pickup = SubmittedPickup(
            cfg.base_dir,
            self.submission,
            reactor,
            settings,
            threadpool=io_pool,
            hostname=cfg.hostname,
        )

    def factory_for(self, spec: ListenerSpec) -> Factory:
        """A new protocol factory for one listener socket."""
        common: dict[str, Any] = dict(
            settings=self.settings,
            portal=self.portal,
            tls=self.tls,
            hostname=self.cfg.hostname,
            clock=self.reactor,
            penalty=self.policy.auth_penalty,
        )
        factory: Any
        if spec.protocol == "smtp":
            from cgtwist.protocols.smtp import SMTPFactory

            factory = SMTPFactory(spec, policy=self.policy, submission=self.submission, **common)
        elif spec.protocol == "pop3":
            from cgtwist.protocols.pop3 import POP3Factory

            factory = POP3Factory(spec, **common, **self._access())
        elif spec.protocol == "imap":
            from cgtwist.protocols.imap import IMAPFactory

            factory = IMAPFactory(spec, **common, **self._access())
        else:
            raise ValueError(f"no {spec.protocol} service")
        self.factories.append(factory)
        return factory  # type: ignore[no-any-return]

    def _access(self) -> dict[str, Any]:
        """What every POP3 and IMAP factory shares beyond ``common``: the Client IP test (they
        are exempt from per-IP connection caps) and one count of sessions per account and IP."""
        return {"is_client_ip": self.policy.is_client_ip, "sessions": self.user_sessions}

    async def start(self) -> None:
        """Recover the spool and start delivering; pick up PIPE submissions."""
        count = await self.manager.start()
        log.info("queue started: {count} message(s) recovered from the spool", count=count)
        self.pickup.startService()

    def control_handlers(self) -> Mapping[str, Callable[[Mapping[str, Any]], Any]]:
        return self.manager.control_handlers()  # type: ignore[no-any-return]

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

        Also after an ``open`` that failed half-way (an SMTP worker stopped while starting):
        only what was built is closed."""
        if self.link is None:
            await defer.maybeDeferred(self.pickup.stopService)
            self.smtp_out.close_idle()
            self.smtp_out.abort_all()
            await self.manager.stop()
        notifier = getattr(self, "notifier", None)
        if notifier is not None:
            await (
                notifier.flush()
            )  # names replaced by IMAP flag changes, while the disk threads run
        stop = getattr(getattr(self, "resolver", None), "stop", None)
        if stop is not None:
            await defer.maybeDeferred(stop)
        for pool in self._pools:
            pool.stop()
        if self.store is not None:
            self.store.close()
