"""The SMTP receiver: an ESMTP server protocol that translates commands into policy calls and
hands accepted messages to submission; its factory enforces connection limits.

Protocol code translates, it never decides (STYLE.md): recipients, relaying, senders go to an
``IPolicy``; messages go to ``ISubmission``, and only its durable result gives 250. What this
module owns is the wire: reply order under PIPELINING (RFC 2920; reading pauses while a policy
Deferred is outstanding, twisted #8126), STARTTLS (RFC 3207, plaintext pipelined after it is
discarded, CVE-2011-0411), AUTH (RFC 4954), enhanced status codes (RFC 2034/3463), and the
limits in ``cgtwist.settings`` (read at use time).
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any, Callable, Optional

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLContextFactory,
    IReactorTime,
    ISSLTransport,
    ITLSTransport,
)
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.mail.smtp import ESMTP
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.address import parse_path
from cgtwist.errors import MailError
from cgtwist.interfaces import IPolicy, ISubmission
from cgtwist.message.trace import received_header, safe_header_line, with_protocol
from cgtwist.protocols import smtp_auth
from cgtwist.protocols.smtp_data import DataReader
from cgtwist.settings import SettingsHolder
from cgtwist.types import Envelope, ListenerSpec, Recipient, SessionInfo

# Bytes we keep buffered while a reply is outstanding (pipelined commands are small; RFC 2920
# forbids sending message content before 354).
_MAX_PENDING = 256 * 1024

_COMMANDS = {
    b"HELO": "helo", b"EHLO": "ehlo", b"MAIL": "mail", b"RCPT": "rcpt", b"DATA": "data",
    b"RSET": "rset", b"NOOP": "noop", b"QUIT": "quit", b"HELP": "help", b"VRFY": "vrfy",
    b"EXPN": "expn", b"STARTTLS": "starttls", b"AUTH": "auth", b"BDAT": "not_offered",
    b"ETRN": "not_offered", b"TURN": "not_offered",
}


@implementer(IHandshakeListener)
class CgSMTP(ESMTP):
    """One SMTP connection. Built by ``SMTPFactory``; all collaborators come from the factory.

    Twisted's ESMTP is the base for its reply formatting and for what it means to be an SMTP
    protocol in Twisted, but the input side is ours: Twisted's line receiver buffers without a
    bound in DATA, accepts bare LF as end of data and answers out of order when validation is a
    Deferred, so ``dataReceived`` and every command are re-implemented here.
    """

    log = Logger()
    transport: Any  # a TCP/TLS transport: ITransport plus producer and TLS methods

    def __init__(self, factory: SMTPFactory) -> None:
        super().__init__(chal={}, contextFactory=None)
        self.factory = factory
        self.host = factory.hostname.encode("ascii", "replace")
        self.callLater = factory.clock.callLater  # type: ignore[method-assign,assignment]  # TimeoutMixin: passed-in clock
        self.session: Optional[SessionInfo] = None
        self._buf = b""
        self._busy = False  # a reply is outstanding: do not read the next command yet
        self._in_loop = False
        self._discarding = False  # inside an over-long command line
        self._closed = False
        self._greeted = False
        self._early_talker = False
        self._registered = False
        self._tls = False
        self._esmtp = False
        self._errors = 0
        self._auth_failures = 0
        self._sasl: Optional[smtp_auth.SASLExchange] = None
        self._reader: Optional[DataReader] = None
        self._messages = 0
        self._reset_transaction()

    # -- settings ---------------------------------------------------------------------------

    def _setting(self, key: str) -> Any:
        return self.factory.settings.current[key]

    # -- connection -------------------------------------------------------------------------

    def connectionMade(self) -> None:
        peer, host = self.transport.getPeer(), self.transport.getHost()
        self.session = SessionInfo(
            session_id=self.factory.new_session_id(),
            peer_ip=str(getattr(peer, "host", peer)), peer_port=int(getattr(peer, "port", 0)),
            local_ip=str(getattr(host, "host", host)), local_port=int(getattr(host, "port", 0)),
            listener=self.factory.listener.name,
        )
        # Implicit TLS (465): the integrator wraps this factory in TLSMemoryBIOFactory.
        t = self.transport
        self._tls = ISSLTransport.providedBy(t) or isinstance(t, TLSMemoryBIOProtocol)
        refusal = self.factory.register(self.session.peer_ip)
        if refusal is not None:
            self.log.info("connection refused: {reason} peer={peer}", reason=refusal, peer=self.session.peer_ip)
            self._send(f"421 4.7.0 {self.factory.hostname} {refusal}, try again later")
            self._close()
            return
        self._registered = True
        self.setTimeout(self._setting("smtp.idle_timeout"))
        self._start(defer.maybeDeferred(self.factory.policy.connect, self.session)
                    .addCallbacks(self._connect_ok, self._connect_refused))

    def _connect_ok(self, result: Any) -> None:
        if isinstance(result, SessionInfo):
            self.session = result
        if self._early_talker:
            # RFC 5321 §3.1: the client must wait for the greeting (Postfix "pregreet").
            self.log.info("pregreet traffic from peer={peer}", peer=self._peer())
            self._send("554 5.5.1 Protocol error: talked before the greeting")
            self._close()
            return
        self._greeted = True
        # RFC 2034 §3: no enhanced code on the greeting.
        self._send(f"220 {self.factory.hostname} ESMTP cgtwist")

    def _connect_refused(self, f: Failure) -> None:
        err = self._error_of(f, "connect")
        self.log.info("connection refused by policy: peer={peer} reply={reply}",
                      peer=self._peer(), reply=err.reply())
        self._send(err.reply() if err.code in (421, 554) else f"554 {err.enhanced} {err.text}")
        self._close()

    def handshakeCompleted(self) -> None:
        """IHandshakeListener: record the negotiated TLS version (STARTTLS or implicit)."""
        self._tls = True
        version: Optional[str] = None
        try:
            version = self.transport.getHandle().get_protocol_version_name()
        except Exception:  # pragma: no cover - a transport without an OpenSSL handle
            version = "TLS"
        if self.session is not None:
            self.session = replace(self.session, tls=version)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closed = True
        self.setTimeout(None)
        if self._registered:
            self._registered = False
            self.factory.unregister(self.session.peer_ip if self.session else "")
        if self._reader is not None and self.session is not None:
            self.log.info("connection lost during DATA: peer={peer}", peer=self._peer())
        self._reader = None

    def timeoutConnection(self) -> None:
        # RFC 5321 §4.5.3.2.7; §3.8: a server closing on timeout should say 421 first.
        self.log.info("idle timeout: peer={peer}", peer=self._peer())
        self._reader = None
        self._send(f"421 4.4.2 {self.factory.hostname} Error: timeout exceeded")
        self._close()

    def _peer(self) -> str:
        return self.session.peer_ip if self.session else "?"

    def _close(self) -> None:
        self._closed = True
        self._buf = b""
        self.transport.loseConnection()

    # -- output -----------------------------------------------------------------------------

    def _send(self, line: str) -> None:
        if not self._closed:
            self.transport.write(line.encode("ascii", "replace") + b"\r\n")

    def _reply(self, code: int, enhanced: str, text: str) -> None:
        """One reply with its RFC 3463 enhanced code; 4xx/5xx count towards the error limit."""
        if code >= 400 and code not in (421, 535):
            self._errors += 1
        self._send(f"{code} {enhanced} {text}")

    def _reply_error(self, err: MailError) -> None:
        self._reply(err.code, err.enhanced, err.text)

    def _error_of(self, f: Failure, what: str) -> MailError:
        """MailError from a failed policy/submission call; anything else is logged as 451."""
        if f.check(MailError):
            return f.value  # type: ignore[return-value]
        self.log.failure("unexpected error in {what}: peer={peer}", f, what=what, peer=self._peer())
        return MailError(451, "4.3.0", "Temporary local problem, try again later")

    # -- input ------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self.resetTimeout()
        if not self._greeted:
            self._early_talker = True
            return
        if self._reader is not None and not self._busy:
            rest = self._reader.feed(data)
            if rest is None:
                return
            self._end_of_data()
            data = rest
        self._buf += data
        if self._busy and len(self._buf) > _MAX_PENDING:
            self.log.info("too much pipelined input: peer={peer}", peer=self._peer())
            self._send("421 4.7.0 Too much pipelined input")
            self._close()
            return
        self._process()

    def _start(self, d: defer.Deferred[Any]) -> None:
        """Hold further input until ``d`` fires, so replies keep command order (RFC 2920)."""
        state = {"fired": False}

        def done(_: Any) -> None:
            state["fired"] = True
            if not self._busy:
                return  # fired synchronously: nothing was paused
            self._busy = False
            if self._closed:
                return
            self.transport.resumeProducing()
            if not self._in_loop:
                self._process()

        d.addBoth(done)
        if not state["fired"] and not self._closed:
            self._busy = True
            self.transport.pauseProducing()

    def _process(self) -> None:
        if self._in_loop:
            return
        self._in_loop = True
        try:
            while not self._busy and not self._closed and self._buf:
                if self._reader is not None:
                    data, self._buf = self._buf, b""
                    rest = self._reader.feed(data)
                    if rest is None:
                        break
                    self._buf = rest
                    self._end_of_data()
                    continue
                nl = self._buf.find(b"\n")
                limit = int(self._setting("smtp.max_command_length"))
                if nl < 0:
                    if len(self._buf) > limit:
                        self._buf = b""
                        if not self._discarding:
                            self._discarding = True
                            self._too_long()
                    break
                line, self._buf = self._buf[:nl], self._buf[nl + 1 :]
                if self._discarding:
                    self._discarding = False
                    continue
                if len(line) > limit:
                    self._too_long()
                    continue
                self._line(line)
        finally:
            self._in_loop = False

    def _too_long(self) -> None:
        # RFC 5321 §4.5.3.1.4: command line limit; answer and keep the connection.
        self.log.info("command line too long: peer={peer}", peer=self._peer())
        self._reply(500, "5.5.2", "Line too long")
        self._check_errors()

    def _line(self, line: bytes) -> None:
        if not line.endswith(b"\r"):
            self._reply(500, "5.5.2", "Syntax error: command lines must end with CRLF")
            self._check_errors()
            return
        line = line[:-1]
        if self._sasl is not None:
            self._auth_response(line)
            return
        if b"\r" in line or b"\0" in line:
            self._reply(500, "5.5.2", "Syntax error: invalid character in command")
            self._check_errors()
            return
        if self._errors >= int(self._setting("smtp.max_errors")):
            self._too_many_errors()
            return
        verb, _, arg = line.strip(b" ").partition(b" ")
        name = _COMMANDS.get(verb.upper())
        if name is None:
            self._reply(500, "5.5.1", "Command unrecognized")
        else:
            getattr(self, "smtp_" + name)(arg.strip(b" "))
        self._check_errors()

    def _check_errors(self) -> None:
        if not self._busy and not self._closed and self._errors >= int(self._setting("smtp.max_errors")):
            self._too_many_errors()

    def _too_many_errors(self) -> None:
        self.log.info("too many errors: peer={peer} errors={errors}", peer=self._peer(), errors=self._errors)
        self._send(f"421 4.7.0 {self.factory.hostname} Error: too many errors")
        self._close()

    # -- session state ------------------------------------------------------------------------

    def _reset_transaction(self) -> None:
        self._sender: Optional[str] = None  # None: no transaction; "" is the null path
        self._mail_params: dict[str, str] = {}
        self._recipients: list[Recipient] = []

    def _auth_allowed(self) -> bool:
        return bool(self._tls or self.factory.listener.allow_plain_auth
                    or self._setting("auth.allow_plaintext"))

    def _tls_context(self) -> Optional[IOpenSSLContextFactory]:
        if self._tls or not ITLSTransport.providedBy(self.transport):
            return None
        return self.factory.tls()

    # -- commands -----------------------------------------------------------------------------

    def smtp_helo(self, arg: bytes) -> None:
        self._hello(arg, esmtp=False)

    def smtp_ehlo(self, arg: bytes) -> None:
        self._hello(arg, esmtp=True)

    def _hello(self, arg: bytes, esmtp: bool) -> None:
        if not arg or len(arg) > 255:
            self._reply(501, "5.5.4", "Syntax: EHLO hostname")
            return
        name = arg.decode("latin-1")
        assert self.session is not None
        self._reset_transaction()  # RFC 5321 §4.1.4: EHLO implies RSET

        def ok(result: Any) -> None:
            assert self.session is not None
            self.session = result if isinstance(result, SessionInfo) else self.session
            self.session = replace(self.session, helo=name)
            self._esmtp = esmtp
            greeting = f"{self.factory.hostname} Hello [{self.session.peer_ip}]"
            if not esmtp:
                self._send(f"250 {greeting}")
                return
            lines = [greeting, "PIPELINING", f"SIZE {int(self._setting('smtp.max_message_size'))}",
                     "8BITMIME", "ENHANCEDSTATUSCODES"]
            if self._tls_context() is not None:
                lines.append("STARTTLS")
            if self._auth_allowed() and not self.session.account:
                lines.append("AUTH " + " ".join(smtp_auth.MECHANISMS))
            for text in lines[:-1]:
                self._send(f"250-{text}")
            self._send(f"250 {lines[-1]}")

        def refused(f: Failure) -> None:
            self._reply_error(self._error_of(f, "helo"))

        self._start(defer.maybeDeferred(self.factory.policy.helo, self.session, name)
                    .addCallbacks(ok, refused))

    def smtp_mail(self, arg: bytes) -> None:
        assert self.session is not None
        if not self.session.helo:
            self._reply(503, "5.5.1", "Error: send HELO/EHLO first")
            return
        if self._sender is not None:
            self._reply(503, "5.5.1", "Error: nested MAIL command")
            return
        if self.factory.listener.submission and not self.session.account:
            # RFC 4954 §6: submission requires authentication first.
            self._reply(530, "5.7.0", "Authentication required")
            return
        if arg[:5].upper() != b"FROM:":
            self._reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
            return
        try:
            path = parse_path(arg[5:], "mail")
        except MailError as e:
            self._reply_error(e)
            return
        if not self._esmtp and path.params:
            self._reply(555, "5.5.4", "Parameters need EHLO")
            return
        max_size = int(self._setting("smtp.max_message_size"))
        if int(path.params.get("SIZE", "0")) > max_size:
            # RFC 1870 §6.1
            self._reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
            return
        sender = path.address

        def ok(_: Any) -> None:
            self._sender = sender
            self._mail_params = dict(path.params)
            self._recipients = []
            self._reply(250, "2.1.0", "Sender OK")

        def refused(f: Failure) -> None:
            err = self._error_of(f, "mail_from")
            self.log.info("sender refused: peer={peer} sender={sender} reply={reply}",
                          peer=self._peer(), sender=sender, reply=err.reply())
            self._reply_error(err)

        self._start(defer.maybeDeferred(self.factory.policy.mail_from, self.session, sender,
                                        dict(path.params)).addCallbacks(ok, refused))

    def smtp_rcpt(self, arg: bytes) -> None:
        assert self.session is not None
        if self._sender is None:
            self._reply(503, "5.5.1", "Error: need MAIL command")
            return
        if arg[:3].upper() != b"TO:":
            self._reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
            return
        if len(self._recipients) >= int(self._setting("smtp.max_recipients")):
            # RFC 5321 §4.5.3.1.8
            self._reply(452, "4.5.3", "Error: too many recipients")
            return
        try:
            path = parse_path(arg[3:], "rcpt")
        except MailError as e:
            self._reply_error(e)
            return
        if not self._esmtp and path.params:
            self._reply(555, "5.5.4", "Parameters need EHLO")
            return
        address = path.router_address
        sender = self._sender

        def ok(normalised: Any) -> None:
            if self._sender is None:  # pragma: no cover - RSET cannot overtake: input is paused
                return
            self._recipients.append(Recipient(
                address=str(normalised or address), orcpt=path.params.get("ORCPT", ""),
                notify=path.params.get("NOTIFY", "")))
            self._reply(250, "2.1.5", "Recipient OK")

        def refused(f: Failure) -> None:
            err = self._error_of(f, "rcpt_to")
            self.log.info("recipient refused: peer={peer} sender={sender} rcpt={rcpt} reply={reply}",
                          peer=self._peer(), sender=sender, rcpt=address, reply=err.reply())
            self._reply_error(err)

        self._start(defer.maybeDeferred(self.factory.policy.rcpt_to, self.session, sender, address,
                                        dict(path.params)).addCallbacks(ok, refused))

    def smtp_data(self, arg: bytes) -> None:
        if arg:
            self._reply(501, "5.5.4", "Syntax: DATA takes no arguments")
            return
        if self._sender is None:
            self._reply(503, "5.5.1", "Error: need MAIL command")
            return
        if not self._recipients:
            self._reply(503, "5.5.1", "Error: no valid recipients")
            return
        self._reader = DataReader(
            max_size=int(self._setting("smtp.max_message_size")),
            max_line=int(self._setting("smtp.max_data_line_length")),
            max_received=int(self._setting("smtp.max_received_headers")),
        )
        self.setTimeout(self._setting("smtp.data_timeout"))
        self._send("354 End data with <CR><LF>.<CR><LF>")

    def _end_of_data(self) -> None:
        reader, self._reader = self._reader, None
        assert reader is not None and self.session is not None
        self.setTimeout(self._setting("smtp.idle_timeout"))
        session, sender, recipients = self.session, self._sender or "", self._recipients
        params = self._mail_params
        self._reset_transaction()
        result = reader.result()
        rcpt_list = [r.address for r in recipients]
        if isinstance(result, MailError):
            self.log.info(
                "message refused: peer={peer} sender={sender} recipients={recipients} size={size} reply={reply}",
                peer=session.peer_ip, sender=sender, recipients=rcpt_list, size=reader.size,
                reply=result.reply())
            self._reply_error(result)
            return
        self._messages += 1
        local_id = f"{session.session_id}.{self._messages}"
        protocol = with_protocol(self._esmtp, session.tls is not None or self._tls, bool(session.account))
        envelope = Envelope(
            sender=sender, recipients=recipients, params=params,
            submit={
                "peer": session.peer_ip, "helo": session.helo, "protocol": protocol,
                "account": session.account or "", "tls": session.tls or "",
                "listener": session.listener, "session": local_id,
            },
        )
        header = received_header(
            helo=session.helo, peer_ip=session.peer_ip, hostname=self.factory.hostname,
            protocol=protocol, msg_id=local_id, when=self.factory.clock.seconds(),
            recipients=rcpt_list, tls_version=session.tls,
        )

        def assemble(lines: Any) -> Any:
            extra = []
            for line in lines or ():
                safe = safe_header_line(line)
                if safe is None:
                    self.log.warn("dropped unsafe trace header line {line!r}", line=line)
                else:
                    extra.append(safe)
            return self.factory.submission.submit(envelope, header + b"".join(extra) + result)

        def accepted(msg_id: Any) -> None:
            self._errors = 0
            self.log.info(
                "accepted msg_id={msg_id} peer={peer} sender={sender} recipients={recipients} size={size}",
                msg_id=msg_id, peer=session.peer_ip, sender=sender, recipients=rcpt_list,
                size=len(result), session=local_id)
            self._reply(250, "2.0.0", f"Ok: queued as {msg_id}")

        def failed(f: Failure) -> None:
            err = self._error_of(f, "submit")
            self.log.info(
                "message refused: peer={peer} sender={sender} recipients={recipients} size={size} reply={reply}",
                peer=session.peer_ip, sender=sender, recipients=rcpt_list, size=len(result),
                reply=err.reply())
            self._reply_error(err)

        d = defer.maybeDeferred(self.factory.policy.trace_headers, session, envelope)
        self._start(d.addCallback(assemble).addCallbacks(accepted, failed))

    def smtp_rset(self, arg: bytes) -> None:
        self._reset_transaction()
        self._reply(250, "2.0.0", "Ok")

    def smtp_noop(self, arg: bytes) -> None:
        self._reply(250, "2.0.0", "Ok")

    def smtp_quit(self, arg: bytes) -> None:
        self._reply(221, "2.0.0", "Bye")
        self._close()

    def smtp_help(self, arg: bytes) -> None:
        self._reply(214, "2.0.0", "See RFC 5321 (commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS AUTH)")

    def smtp_vrfy(self, arg: bytes) -> None:
        if not arg:
            self._reply(501, "5.5.4", "Syntax: VRFY address")
            return
        # RFC 5321 §3.5.3: 252 when we will not verify but would accept.
        self._reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")

    def smtp_expn(self, arg: bytes) -> None:
        self._reply(502, "5.5.1", "EXPN not available")

    def smtp_not_offered(self, arg: bytes) -> None:
        self._reply(502, "5.5.1", "Command not implemented")

    def smtp_starttls(self, arg: bytes) -> None:
        if self._tls:
            self._reply(503, "5.5.1", "TLS already active")
            return
        if arg:
            self._reply(501, "5.5.4", "Syntax: STARTTLS takes no arguments")
            return
        ctx = self._tls_context()
        if ctx is None:
            self._reply(454, "4.7.0", "TLS not available")
            return
        self._reply(220, "2.0.0", "Ready to start TLS")
        if self._buf:
            # CVE-2011-0411: anything sent after STARTTLS before the handshake is not trusted.
            self.log.info("discarded {n} bytes pipelined after STARTTLS: peer={peer}",
                          n=len(self._buf), peer=self._peer())
            self._buf = b""
        # RFC 3207 §4.2: forget everything learned before TLS.
        assert self.session is not None
        self.session = replace(self.session, helo="", account=None)
        self._esmtp = False
        self._reset_transaction()
        self._tls = True
        self.transport.startTLS(ctx)

    # -- AUTH (RFC 4954) ------------------------------------------------------------------------

    def smtp_auth(self, arg: bytes) -> None:
        assert self.session is not None
        if not self.session.helo or not self._esmtp:
            self._reply(503, "5.5.1", "Error: send EHLO first")
            return
        if self.session.account:
            self._reply(503, "5.5.1", "Error: already authenticated")
            return
        if self._sender is not None:
            self._reply(503, "5.5.1", "Error: AUTH not permitted during a mail transaction")
            return
        if not self._auth_allowed():
            self._reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
            return
        mech, _, initial = arg.partition(b" ")
        mechanism = mech.decode("latin-1").upper()
        if mechanism not in smtp_auth.MECHANISMS:
            self._reply(504, "5.5.4", "Unrecognized authentication type")
            return
        self._sasl = smtp_auth.SASLExchange(mechanism)
        if initial.strip():
            self._auth_response(initial.strip())
        else:
            self._send("334 " + smtp_auth.b64(self._sasl.first_challenge()).decode())

    def _auth_response(self, line: bytes) -> None:
        sasl = self._sasl
        assert sasl is not None
        if line == b"*":
            self._sasl = None
            self._reply(501, "5.7.0", "Authentication aborted")
            return
        try:
            step = sasl.step(smtp_auth.b64decode(line))
        except MailError as e:
            self._sasl = None
            if e.code == 535:
                self._start(self._auth_failed(b""))
            else:
                self._reply_error(e)
            return
        if isinstance(step, bytes):
            self._send("334 " + smtp_auth.b64(step).decode())
            return
        self._sasl = None
        username, password = step
        d = smtp_auth.login(self.factory.portal, username, password)
        d.addCallbacks(self._auth_ok, self._auth_error, errbackArgs=(username,))
        self._start(d)

    def _auth_ok(self, account: str) -> None:
        assert self.session is not None
        self.session = replace(self.session, account=account)
        self.log.info("auth ok: proto=smtp ip={peer} user={account}", peer=self._peer(), account=account)
        self._reply(235, "2.7.0", "Authentication successful")

    def _auth_error(self, f: Failure, username: bytes) -> Optional[defer.Deferred[None]]:
        if f.check(UnauthorizedLogin):
            return self._auth_failed(username)
        self.log.failure("auth unavailable: peer={peer}", f, peer=self._peer())
        self._reply(454, "4.7.0", "Temporary authentication failure")
        return None

    def _auth_failed(self, username: bytes) -> defer.Deferred[None]:
        self._auth_failures += 1
        user = username.decode("utf-8", "replace").encode("unicode_escape").decode("ascii")
        # One line per failure in a fail2ban-friendly form (RELIABILITY.md b-G).
        self.log.warn("auth failed: proto=smtp ip={peer} user={user}", peer=self._peer(), user=user)
        delays = list(self._setting("auth.fail_delays") or [0])
        delay = float(delays[min(self._auth_failures, len(delays)) - 1])
        d: defer.Deferred[None] = defer.Deferred()

        def answer() -> None:
            self._reply(535, "5.7.8", "Authentication credentials invalid")
            if self._auth_failures >= int(self._setting("auth.max_failures")):
                self._send("421 4.7.0 Too many authentication failures")
                self._close()
            d.callback(None)

        if delay > 0:
            self.factory.clock.callLater(delay, answer)
        else:
            answer()
        return d


class SMTPFactory(ServerFactory):
    """Builds ``CgSMTP`` for one listener socket and keeps its connection counts.

    ``tls`` is called at use time and returns the current server context factory (or None when
    no certificate is available); ``portal`` is the shared cred Portal whose checkers verify
    AUTH. ``clock`` defaults to the global reactor only when the caller passes nothing.
    """

    protocol = CgSMTP  # type: ignore[assignment]

    def __init__(
        self,
        listener: ListenerSpec,
        settings: SettingsHolder,
        policy: IPolicy,
        submission: ISubmission,
        portal: Portal,
        tls: Callable[[], Optional[IOpenSSLContextFactory]],
        hostname: str,
        clock: Optional[IReactorTime] = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self.listener = listener
        self.settings = settings
        self.policy = policy
        self.submission = submission
        self.portal = portal
        self.tls = tls
        self.hostname = hostname
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self.connections = 0
        self.per_ip: dict[str, int] = {}
        self._prefix = secrets.token_hex(3)
        self._counter = 0

    def buildProtocol(self, addr: Any) -> CgSMTP:
        return CgSMTP(self)

    def new_session_id(self) -> str:
        self._counter += 1
        return f"{self._prefix}{self._counter:06x}"

    def register(self, ip: str) -> Optional[str]:
        """Count a new connection; return why it is refused when over a limit (then not counted)."""
        s = self.settings.current
        if self.connections >= int(s["smtp.max_connections"]):
            return "Error: too many connections"
        if self.per_ip.get(ip, 0) >= int(s["smtp.max_connections_per_ip"]):
            return "Error: too many connections from your address"
        self.connections += 1
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return None

    def unregister(self, ip: str) -> None:
        self.connections -= 1
        n = self.per_ip.get(ip, 0) - 1
        if n > 0:
            self.per_ip[ip] = n
        else:
            self.per_ip.pop(ip, None)
