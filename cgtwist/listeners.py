"""Listeners: CommuniGate's per-protocol lists of sockets, bound, rebound and reported.

Owns the listening ports only: which (protocol, address, port, TLS mode) sockets exist, binding
them (in ``privilegedStartService`` so twistd can drop root afterwards), wrapping implicit-TLS
sockets, and applying a changed listener list without a restart. Protocol behaviour lives in
the factories it is given.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any, Callable, Iterable, Mapping, Optional

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.protocols.tls import TLSMemoryBIOFactory

from cgtwist.logs import Logger
from cgtwist.types import ListenerSpec

FactoryMaker = Callable[[ListenerSpec], Factory]

_HINTS = {
    errno.EACCES: "permission denied: ports below 1024 need root (start as root with "
    "twistd --uid/--gid to drop privileges after binding) or use ports above 1024 "
    "(see README, 'Running unprivileged')",
    errno.EADDRINUSE: "address already in use: another server (Postfix? Dovecot? a second "
    "cgtwist?) holds this port; stop it or change the listener with "
    "'cgtwist-admin settings set listeners ...'",
    errno.EADDRNOTAVAIL: "this machine has no such address; fix the listener's address",
}


class ListenerManager:
    """Binds ListenerSpecs to ports and keeps them in step with the settings."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        makers: Mapping[str, FactoryMaker],
        tls: Any,
        state_file: Optional[str] = None,
    ) -> None:
        self.reactor = reactor
        self.makers = makers
        self.tls = tls
        self.state_file = state_file
        self.ports: dict[ListenerSpec, IListeningPort] = {}
        self.failed: dict[ListenerSpec, str] = {}
        self.paused = False
        # Protocols whose sockets this process binds but does not accept on: SMTP worker
        # processes (cgtwist.smtpworker.child) accept on them instead.
        self.delegated: frozenset[str] = frozenset()
        self.tls_ready = True  # False while the service binds before loading certificates
        self._applying: list[defer.Deferred[None]] = []  # apply() calls not finished yet

    def _bind(self, spec: ListenerSpec) -> None:
        maker = self.makers.get(spec.protocol)
        if maker is None:
            self.log.warn(
                "listener {listener}: no {protocol} service in this build; skipped",
                listener=spec.name,
                protocol=spec.protocol,
            )
            return
        factory: Any = maker(spec)
        if spec.tls == "implicit":
            # Before start-up has generated or loaded the certificate (binding as root) the
            # socket is bound anyway: it accepts nothing until resume(), after TLS is ready.
            if self.tls is None or (self.tls_ready and not self.tls.available):
                self.failed[spec] = "implicit TLS needs a certificate"
                self.log.error(
                    "listener {listener}: implicit TLS needs a certificate; not bound",
                    listener=spec.name,
                )
                return
            factory = TLSMemoryBIOFactory(self.tls, False, factory)
        try:
            port = self.reactor.listenTCP(spec.port, factory, backlog=128, interface=spec.address)
        except CannotListenError as e:
            err = getattr(e.socketError, "errno", None)
            why = _HINTS.get(err, str(e.socketError))  # type: ignore[arg-type]
            self.failed[spec] = why
            self.log.error("listener {listener} cannot bind: {why}", listener=spec.name, why=why)
            return
        if self.paused or spec.protocol in self.delegated:
            port.stopReading()
        self.ports[spec] = port
        self.failed.pop(spec, None)
        self.log.info(
            "listener {listener} bound on port {port} (tls={tls}{sub})",
            listener=spec.name,
            port=port.getHost().port,
            tls=spec.tls,
            sub=", submission" if spec.submission else "",
        )

    def bind_all(self, specs: Iterable[ListenerSpec]) -> None:
        for spec in specs:
            if spec not in self.ports:
                self._bind(spec)
        self._write_state()

    def apply(self, specs: Iterable[ListenerSpec]) -> defer.Deferred[None]:
        """Make the bound set equal ``specs``: close removed sockets, bind new ones.

        Sockets whose spec is unchanged keep running; live connections on a removed socket are
        not cut (only the listening socket closes).
        """
        wanted = list(dict.fromkeys(specs))
        gone = [s for s in self.ports if s not in wanted]
        ds = []
        for spec in gone:
            port = self.ports.pop(spec)
            self.log.info("listener {listener} closed (removed from settings)", listener=spec.name)
            ds.append(defer.maybeDeferred(port.stopListening))
        for spec in list(self.failed):
            if spec not in wanted:
                del self.failed[spec]

        def bind(_: object) -> None:
            self.bind_all(s for s in wanted if s not in self.ports)

        d = defer.gatherResults(ds, consumeErrors=True)
        d.addCallback(bind)
        self._applying.append(d)  # type: ignore[arg-type]

        def finished(result: Any) -> Any:
            self._applying.remove(d)  # type: ignore[arg-type]
            return result

        d.addBoth(finished)
        return d  # type: ignore[return-value]

    def settled(self) -> defer.Deferred[None]:
        """Fires once every ``apply`` begun so far has finished, so ``describe`` then reports
        what they bound and what failed (the answer to ``cgtwist-admin``'s reload)."""
        waits: list[defer.Deferred[None]] = []
        for d in self._applying:
            w: defer.Deferred[None] = defer.Deferred()
            d.addBoth(_pass_on, w)
            waits.append(w)
        done = defer.gatherResults(waits)
        return done.addCallback(lambda _: None)

    def pause(self) -> None:
        """Stop accepting (ports stay bound) until ``resume``: used until the store is ready."""
        self.paused = True
        for port in self.ports.values():
            port.stopReading()  # type: ignore[attr-defined]

    def resume(self) -> None:
        self.paused = False
        for spec, port in self.ports.items():
            if spec.protocol not in self.delegated:
                port.startReading()  # type: ignore[attr-defined]

    def delegate(self, protocols: frozenset[str]) -> None:
        """Accept on ``protocols``' sockets in other processes from now on (or, for protocols
        no longer named, here again)."""
        self.delegated = frozenset(protocols)
        for spec, port in self.ports.items():
            if spec.protocol in self.delegated:
                port.stopReading()  # type: ignore[attr-defined]
            elif not self.paused:
                port.startReading()  # type: ignore[attr-defined]

    def sockets(self, protocol: str) -> list[tuple[int, ListenerSpec]]:
        """(file descriptor, listener) of each bound socket of ``protocol``, to hand on."""
        return [
            (port.fileno(), spec)  # type: ignore[attr-defined]
            for spec, port in self.ports.items()
            if spec.protocol == protocol
        ]

    def stop(self) -> defer.Deferred[Any]:
        ds = [defer.maybeDeferred(p.stopListening) for p in self.ports.values()]
        self.ports.clear()
        return defer.gatherResults(ds, consumeErrors=True)

    def describe(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for spec, port in self.ports.items():
            out.append(
                {
                    "name": spec.name,
                    "protocol": spec.protocol,
                    "address": spec.address,
                    "port": getattr(port.getHost(), "port", None),
                    "configured_port": spec.port,
                    "tls": spec.tls,
                    "submission": spec.submission,
                    "bound": True,
                }
            )
        for spec, why in self.failed.items():
            out.append(
                {
                    "name": spec.name,
                    "protocol": spec.protocol,
                    "address": spec.address,
                    "port": None,
                    "configured_port": spec.port,
                    "tls": spec.tls,
                    "submission": spec.submission,
                    "bound": False,
                    "error": why,
                }
            )
        return out

    def _write_state(self) -> None:
        """Record the actually bound ports (useful with port 0 in tests and for monitoring)."""
        if not self.state_file:
            return
        tmp = self.state_file + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.describe(), f, indent=1)
            os.replace(tmp, self.state_file)
        except OSError as e:
            self.log.warn("cannot write {path}: {err}", path=self.state_file, err=e.strerror)


def _pass_on(result: Any, waiter: defer.Deferred[None]) -> Any:
    """Fire ``waiter`` and hand ``result`` on unchanged (observe a Deferred, not consume it)."""
    waiter.callback(None)
    return result
