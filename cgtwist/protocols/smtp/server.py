"""The SMTP receiver's commands: ESMTP commands that translate into policy calls and hand
accepted messages to submission.

Protocol code translates, it never decides (STYLE.md): senders, recipients and relaying go to an
``IPolicy``; messages go to ``ISubmission``, and only its durable result gives 250. The mail
transaction in progress is one ``Transaction`` (``smtp.transaction``) that MAIL FROM makes and
RSET, HELO/EHLO, STARTTLS and the end of DATA drop. The wire (input, reply order, timeouts,
limits) is ``smtp.wire``; AUTH is ``smtp.auth``; the DATA parser is ``smtp.data``; the
listener's factory and its connection limits are ``smtp.factory``. Limits come
from ``cgtwist.settings`` and are read at use time.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any, Mapping, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IOpenSSLContextFactory, ITLSTransport
from twisted.python.failure import Failure

from cgtwist.address import parse_path
from cgtwist.errors import MailError
from cgtwist.interfaces import (
    DISCARD,
    CheckOutcome,
    IMessageCheck,
    IReceptionFacts,
)
from cgtwist.message.trace import received_header, safe_header_line, with_protocol
from cgtwist.protocols.smtp.auth import MECHANISMS, AuthCommands
from cgtwist.protocols.smtp.data import DataReader
from cgtwist.protocols.smtp.transaction import Transaction
from cgtwist.protocols.smtp.wire import SMTPServices
from cgtwist.types import Recipient, SessionInfo


class CgSMTP(AuthCommands):
    """One SMTP connection. Built by ``SMTPFactory``; all collaborators come from the factory."""

    _messages = 0

    def _max_size(self) -> int:
        """RFC 1870: SIZE 0 means no fixed limit."""
        return self._settings().smtp.max_message_size or sys.maxsize

    def _tls_context(self) -> Optional[IOpenSSLContextFactory]:
        if self._tls or not ITLSTransport.providedBy(self.transport):
            return None
        services: SMTPServices = self.factory  # Twisted types Protocol.factory loosely
        return services.tls()

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
            # DSN (RFC 3461): RET/ENVID/NOTIFY/ORCPT are kept with the envelope, honoured by
            # the bounce generator and passed on to next hops that offer DSN.
            lines = [
                greeting,
                "PIPELINING",
                f"SIZE {self._settings().smtp.max_message_size}",
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
                "DSN",
            ]
            if self._tls_context() is not None:
                lines.append("STARTTLS")
            if self._auth_allowed() and not self.session.account:
                lines.append("AUTH " + " ".join(MECHANISMS))
            self._send_lines([f"250-{text}" for text in lines[:-1]] + [f"250 {lines[-1]}"])

        def refused(f: Failure) -> None:
            self._reply_error(self._error_of(f, "helo"))

        self._start(
            defer.maybeDeferred(self.factory.policy.helo, self.session, name).addCallbacks(
                ok, refused
            )
        )

    def _parse_path(self, text: bytes, kind: str) -> Any:
        """The MAIL/RCPT path and parameters, or None after replying with the error."""
        try:
            path = parse_path(text, kind)
        except MailError as e:
            self._reply_error(e)
            return None
        if not self._esmtp and path.params:  # RFC 5321 §4.1.2: parameters are ESMTP only
            self._reply(555, "5.5.4", "Parameters need EHLO")
            return None
        return path

    def smtp_mail(self, arg: bytes) -> None:
        assert self.session is not None
        if not self.session.helo:
            self._reply(503, "5.5.1", "Error: send HELO/EHLO first")
            return
        if self.transaction is not None:
            self._reply(503, "5.5.1", "Error: nested MAIL command")
            return
        if self.factory.listener.submission and not self.session.account:
            # RFC 4954 §6: submission requires authentication first.
            self._reply(530, "5.7.0", "Authentication required")
            return
        if arg[:5].upper() != b"FROM:":
            self._reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
            return
        path = self._parse_path(arg[5:], "mail")
        if path is None:
            return
        transaction = Transaction(path.address, dict(path.params))
        if transaction.declared_size > self._max_size():
            # RFC 1870 §6.1
            self._reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
            return
        sender = transaction.sender

        def ok(_: Any) -> None:
            self.transaction = transaction
            self._reply(250, "2.1.0", "Sender OK")

        def refused(f: Failure) -> None:
            err = self._error_of(f, "mail_from")
            self.log.info(
                "sender refused: peer={peer} sender={sender} reply={reply}",
                peer=self._peer(),
                sender=sender,
                reply=err.reply(),
            )
            self._reply_error(err)

        session, params = self.session, dict(path.params)
        # Refuse at MAIL FROM when the spool is full (RELIABILITY.md b-B 11: 452 4.3.1), as
        # Postfix does (ISubmission.check_capacity).
        d = defer.maybeDeferred(self.factory.submission.check_capacity, transaction.declared_size)
        d.addCallback(lambda _: self.factory.policy.mail_from(session, sender, params))
        self._start(d.addCallbacks(ok, refused))

    def smtp_rcpt(self, arg: bytes) -> None:
        assert self.session is not None
        transaction = self.transaction
        if transaction is None:
            self._reply(503, "5.5.1", "Error: need MAIL command")
            return
        if arg[:3].upper() != b"TO:":
            self._reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
            return
        if len(transaction.recipients) >= self._settings().smtp.max_recipients:
            # RFC 5321 §4.5.3.1.8
            self._reply(452, "4.5.3", "Error: too many recipients")
            return
        path = self._parse_path(arg[3:], "rcpt")
        if path is None:
            return
        address = path.router_address
        sender = transaction.sender

        def ok(normalised: Any) -> None:
            # RSET cannot overtake the policy's answer: input is paused while it works.
            transaction.add_recipient(
                Recipient(
                    address=str(normalised or address),
                    orcpt=path.params.get("ORCPT", ""),
                    notify=path.params.get("NOTIFY", ""),
                )
            )
            self._reply(250, "2.1.5", "Recipient OK")

        def refused(f: Failure) -> None:
            err = self._error_of(f, "rcpt_to")
            self.log.info(
                "recipient refused: peer={peer} sender={sender} rcpt={rcpt} reply={reply}",
                peer=self._peer(),
                sender=sender,
                rcpt=address,
                reply=err.reply(),
            )
            self._reply_error(err)

        # The policy sees the RCPT parameters plus the SIZE declared at MAIL (IPolicy.rcpt_to).
        params = {k: v for k, v in path.params.items() if k != "SIZE"}
        if transaction.declared_size:
            params["SIZE"] = str(transaction.declared_size)
        self._start(
            defer.maybeDeferred(
                self.factory.policy.rcpt_to, self.session, sender, address, params
            ).addCallbacks(ok, refused)
        )

    def smtp_data(self, arg: bytes) -> None:
        if arg:
            self._reply(501, "5.5.4", "Syntax: DATA takes no arguments")
            return
        if self.transaction is None:
            self._reply(503, "5.5.1", "Error: need MAIL command")
            return
        if not self.transaction.recipients:
            self._reply(503, "5.5.1", "Error: no valid recipients")
            return
        self._reader = DataReader(
            max_size=self._max_size(),
            max_line=self._settings().smtp.max_data_line_length,
            max_received=self._settings().smtp.max_received_headers,
        )
        self._set_timeout(self._settings().smtp.data_timeout)
        self._arm_data_deadline()
        self._send("354 End data with <CR><LF>.<CR><LF>")

    def _end_of_data(self) -> None:
        reader, self._reader = self._reader, None
        transaction = self.transaction
        assert reader is not None and self.session is not None and transaction is not None
        self._deadlines.cancel("data")
        self._set_timeout(self._settings().smtp.idle_timeout)
        session, sender = self.session, transaction.sender
        self._reset_transaction()
        result = reader.result()
        rcpt_list = [r.address for r in transaction.recipients]
        if isinstance(result, MailError):
            self.log.info(
                "message refused: peer={peer} sender={sender} recipients={recipients} size={size} reply={reply}",
                peer=session.peer_ip,
                sender=sender,
                recipients=rcpt_list,
                size=reader.size,
                reply=result.reply(),
            )
            self._reply_error(result)
            return
        self._messages += 1
        local_id = f"{session.session_id}.{self._messages}"
        protocol = with_protocol(
            self._esmtp, session.tls is not None or self._tls, bool(session.account)
        )
        envelope = transaction.envelope(
            {
                "peer": session.peer_ip,
                "helo": session.helo,
                "protocol": protocol,
                "account": session.account or "",
                "tls": session.tls or "",
                "listener": session.listener,
                "session": local_id,
                # What the protection checks found (SPF result, RBL listings) for the Rules.
                **self._reception_facts(session),
            }
        )
        header = received_header(
            helo=session.helo,
            peer_ip=session.peer_ip,
            hostname=self.factory.hostname,
            protocol=protocol,
            msg_id=local_id,
            when=self.factory.clock.seconds(),
            recipients=rcpt_list,
            tls_version=session.tls,
        )

        def assemble(lines: Any) -> Any:
            extra = []
            for line in lines or ():
                if isinstance(line, str):
                    line = line.encode("utf-8", "replace")
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
                msg_id=msg_id,
                peer=session.peer_ip,
                sender=sender,
                recipients=rcpt_list,
                size=len(result),
                session=local_id,
            )
            self._reply(250, "2.0.0", f"Ok: queued as {msg_id}")

        def failed(f: Failure) -> None:
            err = self._error_of(f, "submit")
            self.log.info(
                "message refused: peer={peer} sender={sender} recipients={recipients} size={size} reply={reply}",
                peer=session.peer_ip,
                sender=sender,
                recipients=rcpt_list,
                size=len(result),
                reply=err.reply(),
            )
            self._reply_error(err)

        def discarded() -> None:
            self._errors = 0
            self.log.info(
                "message discarded by the end-of-DATA check: peer={peer} sender={sender} recipients={recipients} size={size}",
                peer=session.peer_ip,
                sender=sender,
                recipients=rcpt_list,
                size=len(result),
                session=local_id,
            )
            self._reply(250, "2.0.0", f"Ok: {local_id}")

        def checked(outcome: CheckOutcome) -> object:
            nonlocal envelope
            if outcome == DISCARD:
                return DISCARD
            if isinstance(outcome, Mapping):  # entries for the submit record
                envelope = replace(envelope, submit={**envelope.submit, **outcome})
            d = defer.maybeDeferred(policy.trace_headers, session, envelope)
            return d.addCallback(assemble)

        def answered(outcome: object) -> None:
            if outcome == DISCARD:
                discarded()
            else:
                accepted(outcome)

        # A policy may look at the message before it is queued (sizes, the From: check, the
        # Server Rules that Reject or Discard before the 250); then the trace headers it wants.
        policy = self.factory.policy
        check = policy.check_message if IMessageCheck.providedBy(policy) else None
        if check is not None:
            d = defer.maybeDeferred(check, session, envelope, result)
        else:
            d = defer.succeed(None)
        self._start(d.addCallback(checked).addCallbacks(answered, failed))

    def _reception_facts(self, session: SessionInfo) -> Mapping[str, str]:
        policy = self.factory.policy
        if not IReceptionFacts.providedBy(policy):
            return {}
        return policy.submit_facts(session)

    def smtp_rset(self, arg: bytes) -> None:
        self._reset_transaction()
        self._reply(250, "2.0.0", "Ok")

    def smtp_noop(self, arg: bytes) -> None:
        self._reply(250, "2.0.0", "Ok")

    def smtp_quit(self, arg: bytes) -> None:
        self._reply(221, "2.0.0", "Bye")
        self._close()

    def smtp_help(self, arg: bytes) -> None:
        self._reply(
            214,
            "2.0.0",
            "See RFC 5321 (commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS AUTH)",
        )

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
        self._start_tls(ctx)
