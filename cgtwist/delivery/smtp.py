"""The SMTP delivery module: one delivery attempt of one message to one destination domain.

Owns walking the destination's hosts in order (listed by ``cgtwist.delivery.smtp_targets``:
MX, implicit MX, literals, smarthost), moving on after connection failures and refused
greetings, reusing an idle connection to the same destination, and turning SMTP replies into
per-recipient states: delivered, failed (5xx) or pending (4xx, timeouts, DNS trouble). Retry
timing belongs to the queue manager; the wire belongs to ``cgtwist.delivery.smtp_client``.
"""

from __future__ import annotations

import random
import re
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional

from twisted.internet import defer, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IAddress, IReactorTCP, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from zope.interface import implementer

from cgtwist.delivery.agent import DeliveryAgent, settle
from cgtwist.delivery.bounce import DSN_PASSED, remote_detail
from cgtwist.delivery.smtp_client import (
    Reply,
    SessionError,
    SMTPClient,
    Timeouts,
    TransactionResult,
)
from cgtwist.delivery.smtp_targets import (
    DestinationError,
    Target,
    mx_targets,
    parse_hostport,
    relay_targets,
)
from cgtwist.interfaces import IDeliveryAgent, IResolver
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder
from cgtwist.types import Envelope, QueueName, Recipient

log = Logger(namespace="cgtwist.delivery.smtp")

Connect = Callable[[str, int, SMTPClient], "defer.Deferred[Any]"]
TLSFactory = Callable[[str], Any]

# TCP6ClientEndpoint's constructor is unannotated (TCP4ClientEndpoint's is not); this is its
# signature up to ``timeout`` (positional, as Twisted declares it), so the call is checked.
_tcp6_endpoint: Callable[[IReactorTCP, str, int, float], TCP6ClientEndpoint] = TCP6ClientEndpoint


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt to one host, for the queue's history (issue 5 part 7)."""

    time: float
    host: str
    ip: str
    reply: str
    tls: Optional[str]


def default_tls(hostname: str) -> Any:
    """Opportunistic STARTTLS: our floor (TLS 1.2), no verification (RFC 3207 practice).

    Never Twisted's legacy default method (twisted #7770).
    """
    return ssl.CertificateOptions(raiseMinimumTo=ssl.TLSVersion.TLSv1_2, verify=False)


def default_verified_tls(hostname: str, ca_file: str = "") -> Any:
    """Verified TLS for the smarthost (certificate and name checked by service-identity)."""
    trust = None
    if ca_file:
        with open(ca_file, "rb") as f:
            trust = ssl.Certificate.loadPEM(f.read())
    return ssl.optionsForClientTLS(
        hostname,
        trustRoot=trust,
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
    )


class _OneConnection(Factory):
    """``connectProtocol``'s one-shot factory without its "Starting factory" and "Stopping
    factory" lines: two lines per outbound connection that tell an administrator nothing (the
    delivery line names the host) and cost 7 % of the log writes of an outbound run."""

    noisy = False

    def __init__(self, protocol: SMTPClient) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Optional[IAddress]) -> SMTPClient:
        return self._protocol


@implementer(IDeliveryAgent)
class SMTPDelivery(DeliveryAgent):
    """IDeliveryAgent for module "SMTP": queue = recipient domain or ``[192.0.2.1]`` literal.

    ``tls_client_options(host)`` gives the creator for opportunistic STARTTLS;
    ``tls_verified_options(host)`` the verifying one for a smarthost. ``connect(ip, port,
    protocol)`` opens the TCP connection (tests may replace it). ``on_attempt(msg_id, Attempt)``
    receives one record per host tried that answered. ``rng`` orders equal-preference MX hosts.
    """

    module = "SMTP"
    logs_deliveries = True  # the to=<...> relay=... status= line of each recipient (_run)

    def __init__(
        self,
        resolver: IResolver,
        settings: SettingsHolder,
        hostname: str,
        reactor: Any,
        tls_client_options: Optional[TLSFactory] = None,
        port: int = 25,
        connect: Optional[Connect] = None,
        tls_verified_options: Optional[TLSFactory] = None,
        on_attempt: Optional[Callable[[str, Attempt], None]] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.resolver: Any = resolver
        self.settings = settings
        self.hostname = hostname
        self.reactor = reactor
        self.tls_client_options = tls_client_options or default_tls
        self.tls_verified_options = tls_verified_options
        self.port = port
        self._connect = connect or self._tcp_connect
        self.on_attempt = on_attempt
        self.rng = rng or random.Random()
        self._idle: dict[tuple[str, str, int], list[tuple[SMTPClient, Any]]] = {}  # IDelayedCall
        self._clients: weakref.WeakSet[SMTPClient] = weakref.WeakSet()
        self._stopping = False

    # --- settings ---------------------------------------------------------------------------

    def _timeouts(self) -> Timeouts:
        smtp = self.settings.current.smtp
        return Timeouts(
            greeting=float(smtp.timeout_greeting),
            command=float(smtp.timeout_command),
            mail=float(smtp.timeout_mail),
            rcpt=float(smtp.timeout_rcpt),
            data_init=float(smtp.timeout_data_init),
            data_block=float(smtp.timeout_data_block),
            data_end=float(smtp.timeout_data_end),
        )

    def _remote_port(self) -> int:
        """``smtp.remote_port`` when the administrator set it, else the port given here."""
        current = self.settings.current
        return current.smtp.remote_port if "smtp.remote_port" in current.overrides else self.port

    def _tcp_connect(self, ip: str, port: int, proto: SMTPClient) -> defer.Deferred[Any]:
        timeout = float(self.settings.current.smtp.timeout_connect)
        ep: IStreamClientEndpoint
        if ":" in ip:
            ep = _tcp6_endpoint(self.reactor, ip, port, timeout)
        else:
            ep = TCP4ClientEndpoint(self.reactor, ip, port, timeout=timeout)
        return ep.connect(_OneConnection(proto))

    # --- IDeliveryAgent ----------------------------------------------------------------------

    async def attempt(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName],
    ) -> list[Recipient]:
        """One attempt for ``recipients`` of ``SMTP(domain)``."""
        domain = domain_of(queue, recipients[0])
        return await self._attempt(msg_id, domain, envelope, data, recipients)

    async def _attempt(
        self, msg_id: str, queue: str, envelope: Envelope, data: bytes, recipients: list[Recipient]
    ) -> list[Recipient]:
        if self._stopping:
            return settle(recipients, "pending", "4.3.2 server shutting down")
        relay = self.settings.current.smtp.relayhost.strip()
        port = self._remote_port()
        auth: Optional[tuple[str, str]] = None
        verified = False
        if relay:
            host, port, _bracketed = parse_hostport(relay, port)
            key = (f"relay:{relay}", host, port)
            auth = _auth_pair(self.settings.current.smtp.relayhost_auth)
            verified = True
            targets = relay_targets(self.resolver, host)
        else:
            key = (queue, queue, port)
            targets = mx_targets(self.resolver, queue, self.rng)

        # A connection kept from the previous message to this destination (several messages
        # per connection); if it died while idle, fall through to a fresh one.
        client = self._take_idle(key)
        if client is not None:
            if await self._run(msg_id, key, client, envelope, data, recipients, reused=True):
                return recipients

        last = "4.4.1 no answer from any host"
        tried = 0
        limit = max(1, self.settings.current.smtp.max_addresses)
        try:
            async for target in targets:
                if tried >= limit:
                    break
                for ip in target.ips:
                    if tried >= limit:
                        break
                    tried += 1
                    opportunistic = not verified and self.settings.current.smtp.opportunistic_tls
                    # A broken TLS stack must not make a domain unreachable: RFC 3207 §4.1
                    # lets the client go on in plaintext; try this address once without TLS.
                    outcome: Optional[str] = "tls"
                    for tls in (True, False) if opportunistic else (False,):
                        outcome = await self._session(
                            msg_id,
                            key,
                            target,
                            ip,
                            port,
                            envelope,
                            data,
                            recipients,
                            verified,
                            tls,
                            auth,
                        )
                        if outcome != "tls":
                            break
                    if outcome is None:
                        return recipients
                    last = (
                        f"4.7.5 TLS with {target.host}[{ip}] failed"
                        if outcome == "tls"
                        else outcome
                    )
        except DestinationError as e:
            state = "failed" if e.permanent else "pending"
            settle(recipients, state, f"{e.enhanced} {e.text}")
            log.info(
                "{msg_id}: SMTP({queue}) {state}: {enhanced} {text}",
                msg_id=msg_id,
                queue=queue,
                state=state,
                enhanced=e.enhanced,
                text=e.text,
            )
            return recipients
        settle(recipients, "pending", last)
        log.info(
            "{msg_id}: SMTP({queue}) deferred: {detail}", msg_id=msg_id, queue=queue, detail=last
        )
        return recipients

    async def _session(
        self,
        msg_id: str,
        key: tuple[str, str, int],
        target: Target,
        ip: str,
        port: int,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        verified: bool,
        use_tls: bool,
        auth: Optional[tuple[str, str]],
    ) -> Optional[str]:
        """Connect to one address and deliver. None when results were recorded; otherwise the
        reason to try the next address (``"tls"`` when only TLS failed)."""
        tls: Optional[TLSFactory] = None
        if verified:
            tls = self.tls_verified_options or (
                lambda h: default_verified_tls(h, self.settings.current.smtp.relayhost_ca_file)
            )
        elif use_tls:
            tls = self.tls_client_options
        client = SMTPClient(
            self.reactor,
            self.hostname,
            target.host,
            self._timeouts(),
            tls=tls,
            require_tls=verified and auth is not None,
            auth=auth,
            peer_ip=ip,
        )
        self._clients.add(client)
        try:
            await self._connect(ip, port, client)
        except Exception as e:
            log.info(
                "{msg_id}: cannot connect to {host}[{ip}]:{port}: {err}",
                msg_id=msg_id,
                host=target.host,
                ip=ip,
                port=port,
                err=str(e) or type(e).__name__,
            )
            return f"4.4.1 connection to {target.host}[{ip}] failed"
        try:
            await client.start()
        except SessionError as e:
            client.abort(e)
            self._record(
                msg_id, target.host, ip, str(e.reply) if e.reply else e.text, client.tls_version
            )
            log.info(
                "{msg_id}: {host}[{ip}] session failed during {during}: {err}",
                msg_id=msg_id,
                host=target.host,
                ip=ip,
                during=e.during,
                err=e.text,
            )
            if e.during == "tls":
                return "tls"
            if e.reply is not None:
                return remote_detail(target.host, ip, str(e.reply))
            return f"4.4.2 {target.host}[{ip}]: {e.text}"
        await self._run(msg_id, key, client, envelope, data, recipients, target.host, ip)
        return None

    async def _transaction(
        self, client: SMTPClient, envelope: Envelope, data: bytes, recipients: list[Recipient]
    ) -> TransactionResult:
        limit = client.size_limit()
        if limit and len(data) > limit:
            # RFC 1870 §6.1: do not send what the server said it will not take.
            too_big = Reply(552, (f"5.3.4 message size {len(data)} exceeds the limit {limit}",))
            return TransactionResult(mail=too_big, rcpts=[None] * len(recipients))
        return await client.transaction(*self._tx_args(client, envelope, data, recipients))

    def _tx_args(
        self, client: SMTPClient, envelope: Envelope, data: bytes, recipients: list[Recipient]
    ) -> tuple[str, list[tuple[str, str]], str, bytes]:
        eight_bit = not data.isascii()  # C speed: a Python loop per byte was 15 % of outbound CPU
        utf8 = not (envelope.sender.isascii() and all(r.address.isascii() for r in recipients))
        params = client.mail_params(len(data), dict(envelope.params), eight_bit, utf8)
        rcpts = [(r.address, client.rcpt_params(r.notify, r.orcpt)) for r in recipients]
        return envelope.sender, rcpts, params, data

    # --- results -----------------------------------------------------------------------------

    def _precheck(
        self, client: SMTPClient, envelope: Envelope, recipients: list[Recipient]
    ) -> list[Recipient]:
        """Fail what must not go on the wire; return the recipients to send."""
        if envelope.sender and not _safe_path(envelope.sender):
            settle(recipients, "failed", "5.1.7 unusable sender address")
            return []
        todo = []
        for r in recipients:
            if _safe_path(r.address):
                todo.append(r)
            else:  # never let a CR/LF or '>' reach the command line (command injection)
                r.state, r.detail = "failed", "5.1.3 unusable recipient address"
        utf8 = not (envelope.sender.isascii() and all(r.address.isascii() for r in todo))
        if todo and utf8 and "SMTPUTF8" not in client.extensions:
            # RFC 6531 §3.2: without SMTPUTF8 at the next hop the message cannot be sent.
            settle(
                todo,
                "failed",
                "5.6.7 the receiving server does not accept internationalised addresses (SMTPUTF8)",
            )
            return []
        return todo

    async def _run(
        self,
        msg_id: str,
        key: tuple[str, str, int],
        client: SMTPClient,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        host: str = "",
        ip: str = "",
        reused: bool = False,
    ) -> bool:
        """Send the message on an open session and record per-recipient results.

        Recipients refused with 452 (too many recipients, RFC 5321 §4.5.3.1.10) go again in a
        further transaction on the same connection as long as each round delivers something.
        False only when a reused idle connection turned out dead before MAIL was answered (the
        recipients are untouched then).
        """
        host = host or client.peer_name
        # The address kept with the session: asking the socket (getPeer builds an address
        # object) for each message of a reused connection was 2 % of the reactor's time.
        ip = ip or client.peer_ip or _peer_ip(client)
        todo = self._precheck(client, envelope, recipients)
        result: Optional[TransactionResult] = None
        rounds = 0
        while todo:
            result = await self._transaction(client, envelope, data, todo)
            if reused and rounds == 0 and result.error is not None and result.mail is None:
                client.abort(result.error)
                return False
            rounds += 1
            apply_result(result, todo, host, ip, dsn="DSN" in client.extensions)
            final = result.end or result.data or result.mail
            reply = str(final) if final is not None else (result.error.text if result.error else "")
            self._record(msg_id, host, ip, reply, client.tls_version)
            if result.error is not None and result.data is not None and result.data.code == 354:
                # RFC 5321 §6.1 / RFC 1047: the peer may have the message already; we retry
                # anyway (at-least-once) and say so in the log.
                log.warn(
                    "{msg_id}: {host}[{ip}] lost the session after DATA ({err}); retrying "
                    "may duplicate the message",
                    msg_id=msg_id,
                    host=host,
                    ip=ip,
                    err=result.error.text,
                )
            again = [
                r
                for i, r in enumerate(todo)
                if r.state == "pending"
                and i < len(result.rcpts)
                and (rcpt_reply := result.rcpts[i]) is not None
                and rcpt_reply.code == 452
            ]
            progressed = any(r.state == "delivered" for r in todo)
            if (
                result.error is not None
                or not again
                or not progressed
                or not client.alive
                or rounds >= 100
            ):
                break
            todo = again
        for r in recipients:
            log.info(
                "{msg_id}: to=<{rcpt}> relay={host}[{ip}] tls={tls} conn_use={uses} "
                "status={state} {detail}",
                msg_id=msg_id,
                rcpt=r.address,
                host=host,
                ip=ip,
                tls=client.tls_version or "none",
                uses=client.uses,
                state=r.state,
                detail=r.detail,
            )
        if (result is None or result.error is None) and client.alive:
            self._keep_idle(key, client)
        else:
            client.abort((result.error if result else None) or SessionError("done", "quit"))
        return True

    def _record(self, msg_id: str, host: str, ip: str, reply: str, tls: Optional[str]) -> None:
        if self.on_attempt is not None:
            try:
                self.on_attempt(msg_id, Attempt(self.reactor.seconds(), host, ip, reply, tls))
            except Exception:
                log.failure("attempt recorder failed")

    # --- connection reuse ----------------------------------------------------------------------

    def _keep_idle(self, key: tuple[str, str, int], client: SMTPClient) -> None:
        keep = float(self.settings.current.smtp.connection_reuse_time)
        if keep <= 0:
            client.quit()
            return
        entry: list[tuple[SMTPClient, Any]] = self._idle.setdefault(key, [])

        def expire() -> None:
            for i, (c, _t) in enumerate(entry):
                if c is client:
                    del entry[i]
                    break
            if not entry:
                self._idle.pop(key, None)
            client.quit()

        entry.append((client, self.reactor.callLater(keep, expire)))

    def _take_idle(self, key: tuple[str, str, int]) -> Optional[SMTPClient]:
        entry = self._idle.get(key)
        while entry:
            client, timer = entry.pop()
            if timer.active():
                timer.cancel()
            if not entry:
                self._idle.pop(key, None)
            if client.alive:
                return client
        return None

    def abort_all(self) -> None:
        """Service shutdown: drop every session in flight (its recipients stay queued, to be
        retried after the restart) so that a stalled remote host cannot hold up the stop."""
        self._stopping = True
        for client in list(self._clients):
            client.abort(SessionError("server shutting down", "shutdown"))

    def close_idle(self) -> None:
        """QUIT every kept connection (service shutdown)."""
        for entry in list(self._idle.values()):
            for client, timer in entry:
                if timer.active():
                    timer.cancel()
                client.quit()
        self._idle.clear()


def apply_result(
    result: TransactionResult, recipients: list[Recipient], host: str, ip: str, dsn: bool = False
) -> None:
    """Per-recipient states from one transaction (RFC 5321 §4.2.1: 2yz ok, 4yz retry, 5yz fail).

    ``dsn``: the server offered DSN, so NOTIFY went on with the recipient and a success report
    is that hop's job (marked with ``DSN_PASSED`` in the detail).
    """
    err = result.error
    for i, r in enumerate(recipients):
        rcpt = result.rcpts[i] if i < len(result.rcpts) else None
        if result.mail is not None and result.mail.code != 250:
            _set(r, result.mail, host, ip)
        elif rcpt is not None and not rcpt.positive:
            _set(r, rcpt, host, ip)  # this recipient was refused whatever happened next
        elif rcpt is None:
            r.state = "pending"
            r.detail = f"4.4.2 {host}[{ip}]: {err.text if err else 'no reply to RCPT'}"
        elif result.data is not None and result.data.code != 354:
            _set(r, result.data, host, ip)
        elif result.end is not None:
            _set(r, result.end, host, ip)
        else:
            # Lost between RCPT and the reply to the final dot: not delivered as far as we know.
            r.state = "pending"
            r.detail = f"4.4.2 {host}[{ip}]: {err.text if err else 'no reply to end of data'}"
        if dsn and r.state == "delivered" and "SUCCESS" in (r.notify or "").upper():
            r.detail += DSN_PASSED


# Controls (CR, LF, NUL...), DEL and angle brackets: a per-character generator here was 1 % of
# an outbound run's profile.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>]")


def _safe_path(address: str) -> bool:
    """Fit for ``<...>`` on a command line: no controls, no angle brackets, at most 256 octets
    (RFC 5321 §4.5.3.1.3), spaces only inside a quoted local part."""
    if not address or len(address.encode("utf-8", "replace")) > 256:
        return False
    if _UNSAFE.search(address):
        return False
    return " " not in address or address.startswith('"')


def _set(r: Recipient, reply: Any, host: str, ip: str) -> None:
    if 200 <= reply.code < 300:
        r.state = "delivered"
    elif reply.code >= 500:
        r.state = "failed"
    else:
        r.state = "pending"
    r.detail = remote_detail(host, ip, str(reply))


def domain_of(queue: Optional[QueueName], r: Recipient) -> str:
    """The queue's destination (domain or ``[ip]``); the recipient's domain without one."""
    if queue is not None and queue.module == "SMTP" and queue.queue:
        return queue.queue
    return r.address.rpartition("@")[2].lower()


def _auth_pair(raw: Any) -> Optional[tuple[str, str]]:
    if not raw:
        return None
    if isinstance(raw, dict):
        return str(raw.get("user", "")), str(raw.get("password", ""))
    if isinstance(raw, (list, tuple)) and len(raw) == 2:
        return str(raw[0]), str(raw[1])
    if isinstance(raw, str) and ":" in raw:
        user, _, password = raw.partition(":")
        return user, password
    return None


def _peer_ip(client: SMTPClient) -> str:
    try:
        transport: Any = client.transport
        return str(transport.getPeer().host)
    except Exception:
        return ""
