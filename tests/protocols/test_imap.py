"""IMAP connection behaviour: capabilities, TLS and login policy, literals and limits, timeouts."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from tests.protocols.test_imap_support import Client, World


def _has_continuation(out: bytes) -> bool:
    return any(line.startswith(b"+") for line in out.split(b"\r\n"))


def _plain(user: bytes, pw: bytes) -> bytes:
    return base64.b64encode(b"\0" + user + b"\0" + pw)


class CapabilityTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()

    def test_before_tls_login_disabled_and_starttls_offered(self) -> None:
        """A client on port 143 sees STARTTLS and LOGINDISABLED, and no AUTH=PLAIN, before TLS."""
        c = Client(self.world)
        self.assertIn(b"STARTTLS", c.greeting)
        self.assertIn(b"LOGINDISABLED", c.greeting)
        self.assertNotIn(b"AUTH=PLAIN", c.greeting)
        self.assertNotIn(b"PREAUTH", c.greeting)

    def test_extensions_advertised(self) -> None:
        """Every extension we implement is listed in CAPABILITY, and nothing we do not implement."""
        c = Client(self.world)
        out = c.send(b"a CAPABILITY\r\n")
        line = out.split(b"\r\n")[0].split()
        for cap in (
            b"IMAP4rev1",
            b"LITERAL+",
            b"SASL-IR",
            b"ID",
            b"ENABLE",
            b"IDLE",
            b"NAMESPACE",
            b"UIDPLUS",
            b"MOVE",
            b"UNSELECT",
            b"SPECIAL-USE",
            b"CHILDREN",
            b"CONDSTORE",
            b"QRESYNC",
            b"QUOTA",  # RFC 9208 (cgtwist.protocols.imap.quota)
        ):
            self.assertIn(cap, line)
        for absent in (b"QUOTASET", b"COMPRESS=DEFLATE", b"AUTH=LOGIN"):
            self.assertNotIn(absent, line)
        self.assertIn(b"a OK", out)

    def test_after_starttls_auth_plain_and_no_logindisabled(self) -> None:
        """After STARTTLS the capability list offers AUTH=PLAIN and no longer STARTTLS."""
        c = Client(self.world)
        out = c.send(b"t STARTTLS\r\n")
        self.assertIn(b"t OK", out)
        self.assertEqual(c.transport.tls_context, "ctx")
        out = c.send(b"a CAPABILITY\r\n")
        self.assertIn(b"AUTH=PLAIN", out)
        self.assertNotIn(b"LOGINDISABLED", out)
        self.assertNotIn(b"STARTTLS", out)

    def test_implicit_tls_listener(self) -> None:
        """On an implicit-TLS listener (993) login is allowed at once and STARTTLS is not offered."""
        c = Client(self.world, tls="implicit")
        self.assertIn(b"AUTH=PLAIN", c.greeting)
        self.assertNotIn(b"STARTTLS", c.greeting)
        self.assertNotIn(b"LOGINDISABLED", c.greeting)
        self.assertIn(b"a OK", c.send(b"a LOGIN alice@example.com secret\r\n"))

    def test_replies_not_held_back_by_nagle(self) -> None:
        """Small replies go out at once: the connection sets TCP_NODELAY (no 40 ms stall per command)."""
        c = Client(self.world)
        self.assertTrue(c.transport.nodelay)

    def test_no_certificate_no_starttls(self) -> None:
        """Without a certificate STARTTLS is neither advertised nor accepted."""
        c = Client(self.world, ctx=None)
        self.assertNotIn(b"STARTTLS", c.greeting)
        self.assertIn(b"t NO", c.send(b"t STARTTLS\r\n"))


class StartTLSTests(unittest.TestCase):
    def test_pipelined_commands_after_starttls_are_discarded(self) -> None:
        """CVE-2011-0411: a command sent in the same packet as STARTTLS is never executed."""
        c = Client(World())
        out = c.send(b"t STARTTLS\r\nb CAPABILITY\r\nc LOGIN alice@example.com secret\r\n")
        self.assertIn(b"t OK", out)
        self.assertNotIn(b"b OK", out)
        self.assertNotIn(b"c ", out)
        self.assertEqual(c.proto.state, "unauth")
        self.assertIn(b"b OK", c.send(b"b CAPABILITY\r\n"))

    def test_second_starttls_refused(self) -> None:
        """A second STARTTLS inside TLS gets BAD."""
        c = Client(World())
        c.send(b"t STARTTLS\r\n")
        self.assertIn(b"u BAD", c.send(b"u STARTTLS\r\n"))


class LoginPolicyTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()

    def test_plaintext_login_refused_before_tls(self) -> None:
        """LOGIN on an unencrypted link gets NO [PRIVACYREQUIRED] and the password is not checked."""
        c = Client(self.world)
        self.assertIn(b"a NO [PRIVACYREQUIRED]", c.send(b"a LOGIN alice@example.com secret\r\n"))
        self.assertEqual(c.proto.state, "unauth")
        self.assertIn(
            b"b NO [PRIVACYREQUIRED]",
            c.send(b"b AUTHENTICATE PLAIN " + _plain(b"alice@example.com", b"secret") + b"\r\n"),
        )

    def test_listener_may_allow_plaintext(self) -> None:
        """A listener configured with allow_plain_auth accepts LOGIN without TLS."""
        c = Client(self.world, allow_plain=True)
        self.assertNotIn(b"LOGINDISABLED", c.greeting)
        self.assertIn(b"a OK", c.send(b"a LOGIN alice@example.com secret\r\n"))

    def test_setting_may_allow_plaintext(self) -> None:
        """auth.allow_plaintext switches the policy on for every listener."""
        c = Client(World({"auth.allow_plaintext": True}))
        self.assertIn(b"a OK", c.send(b"a LOGIN alice@example.com secret\r\n"))

    def test_login_with_quoted_and_literal_arguments(self) -> None:
        """Quoted strings with escapes and literals both work for LOGIN (as imaplib sends them)."""
        c = Client(self.world, tls="implicit")
        self.assertTrue(_has_continuation(c.send(b"a LOGIN {17}\r\n")))
        self.assertIn(b"a OK", c.send(b'alice@example.com "secret"\r\n'))
        c2 = Client(self.world, tls="implicit")
        self.assertIn(
            b"a NO", c2.send(b'a LOGIN "alice@example.com" "sec\\"ret"\r\n') + self._advance(c2)
        )

    def _advance(self, c: Client) -> bytes:
        self.world.clock.advance(30)
        return c.take()

    def test_authenticate_plain_with_and_without_initial_response(self) -> None:
        """SASL PLAIN works with SASL-IR and with a continuation; '*' cancels with BAD."""
        c = Client(self.world, tls="implicit")
        self.assertIn(
            b"a OK",
            c.send(b"a AUTHENTICATE PLAIN " + _plain(b"alice@example.com", b"secret") + b"\r\n"),
        )
        c2 = Client(self.world, tls="implicit")
        self.assertEqual(c2.send(b"b AUTHENTICATE PLAIN\r\n"), b"+ \r\n")
        self.assertIn(b"b OK", c2.send(_plain(b"bob@example.com", b"hunter2") + b"\r\n"))
        c3 = Client(self.world, tls="implicit")
        c3.send(b"c AUTHENTICATE PLAIN\r\n")
        self.assertIn(b"c BAD", c3.send(b"*\r\n"))
        self.assertIn(b"d BAD", c3.send(b"d AUTHENTICATE PLAIN !!!notbase64\r\n"))
        self.assertIn(b"e NO", c3.send(b"e AUTHENTICATE CRAM-MD5\r\n"))

    def test_failed_login_reply_is_delayed_per_ip(self) -> None:
        """Wrong passwords are answered after 2, 4, then 8 s (auth.fail_delays), also on a new
        connection from the same IP; other IPs are not slowed down."""
        c = Client(self.world, tls="implicit")
        self.assertEqual(c.send(b"a LOGIN alice@example.com wrong\r\n"), b"")
        self.world.clock.advance(1.9)
        self.assertEqual(c.take(), b"")
        self.world.clock.advance(0.2)
        self.assertIn(b"a NO [AUTHENTICATIONFAILED]", c.take())
        c.send(b"b LOGIN alice@example.com wrong2\r\n")
        self.world.clock.advance(3.9)
        self.assertEqual(c.take(), b"")
        self.world.clock.advance(0.2)
        self.assertIn(b"b NO", c.take())
        again = Client(self.world, factory=c.factory)  # reconnecting does not reset the delay
        again.send(b"c LOGIN alice@example.com wrong3\r\n")
        self.world.clock.advance(7.9)
        self.assertEqual(again.take(), b"")
        self.world.clock.advance(0.2)
        self.assertIn(b"c NO", again.take())
        other = Client(self.world, ip="198.51.100.7", factory=c.factory)
        other.send(b"x LOGIN alice@example.com nope\r\n")
        self.world.clock.advance(1.9)
        self.assertEqual(other.take(), b"")
        self.world.clock.advance(0.2)
        self.assertIn(b"x NO", other.take())

    def test_same_wrong_password_does_not_escalate(self) -> None:
        """A client retrying one stale password is not slowed down further (RELIABILITY.md
        b-G 39, as SMTP AUTH): the delay grows with new guesses only, and each failure is
        one fail2ban line, IMAP's own."""
        from twisted.logger import globalLogPublisher

        lines: list[str] = []

        def observe(event: dict[str, object]) -> None:
            from twisted.logger import formatEvent

            text = formatEvent(event)
            if text.startswith("auth failed:"):
                lines.append(text)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        c = Client(self.world, tls="implicit")
        for tag in (b"a", b"b"):
            self.assertEqual(c.send(tag + b" LOGIN alice@example.com stale\r\n"), b"")
            self.world.clock.advance(1.9)
            self.assertEqual(c.take(), b"")
            self.world.clock.advance(0.2)
            self.assertIn(tag + b" NO [AUTHENTICATIONFAILED]", c.take())
        self.assertEqual(
            lines, ["auth failed: proto=imap ip=192.0.2.10 user=alice@example.com"] * 2
        )

    def test_too_many_failures_disconnect(self) -> None:
        """After auth.max_failures wrong passwords on one connection the server says BYE."""
        c = Client(World({"auth.max_failures": 2, "auth.fail_delays": [0]}), tls="implicit")
        c.send(b"a LOGIN alice@example.com x\r\n")
        c.world.clock.advance(0)
        c.send(b"b LOGIN alice@example.com y\r\n")
        c.world.clock.advance(0)
        out = c.take()
        self.assertIn(b"b NO", out)
        self.assertIn(b"* BYE", out)
        self.assertTrue(c.transport.disconnecting)

    def test_login_name_forms_reach_the_portal_as_given(self) -> None:
        """user@domain, user%domain and bare names go to the portal unchanged (the checker
        decides what they mean), for LOGIN and AUTHENTICATE alike."""
        seen: list[bytes] = []
        login = self.world.portal.login

        def spy(creds: object, mind: object, *ifaces: object) -> object:
            seen.append(creds.username)  # type: ignore[attr-defined]
            return login(creds, mind, *ifaces)  # type: ignore[arg-type]

        self.world.portal.login = spy  # type: ignore[method-assign]
        c = Client(self.world, tls="implicit")
        self.assertIn(b"a OK", c.send(b"a LOGIN bob@example.com hunter2\r\n"))
        self.assertEqual(c.proto.account_name, "bob@example.com")
        for n, name in enumerate([b"alice%example.com", b"alice"]):
            c2 = Client(self.world, tls="implicit")
            c2.send(b"x%d LOGIN %s secret\r\n" % (n, name))
        c3 = Client(self.world, tls="implicit")
        c3.send(b"y AUTHENTICATE PLAIN " + _plain(b"Alice%Example.COM", b"pw") + b"\r\n")
        self.assertEqual(
            seen, [b"bob@example.com", b"alice%example.com", b"alice", b"Alice%Example.COM"]
        )


class LiteralAndLimitTests(unittest.TestCase):
    """RELIABILITY a8 / twisted #12763: literal attacks never hang and never get a '+'."""

    def setUp(self) -> None:
        self.world = World()
        self.c = Client(self.world)

    def test_huge_literal_before_login_refused_without_continuation(self) -> None:
        """`a LOGIN {400000000}` gets BAD at once, no '+', and the session keeps working."""
        out = self.c.send(b"a LOGIN {400000000}\r\n")
        self.assertTrue(out.startswith(b"a BAD"), out)
        self.assertFalse(_has_continuation(out))
        self.assertIn(b"b OK", self.c.send(b"b NOOP\r\n"))

    def test_malformed_literal_sizes(self) -> None:
        """{-1}, {}, {9999999999} and {abc} each get BAD, never a hang or a traceback."""
        for n, lit in enumerate([b"{-1}", b"{}", b"{9999999999}", b"{abc}", b"{1x+}"]):
            out = self.c.send(b"t%d LOGIN %s\r\n" % (n, lit))
            self.assertTrue(out.startswith(b"t%d BAD" % n), (lit, out))
            self.assertFalse(_has_continuation(out))
        self.assertIn(b"z OK", self.c.send(b"z NOOP\r\n"))

    def test_negative_literal_in_search_does_not_hang(self) -> None:
        """`a3 SEARCH {-100}zzz` (the Twisted reactor-hang input) gets BAD."""
        self.c.login()
        self.c.select()
        self.assertIn(b"a3 BAD", self.c.send(b"a3 SEARCH {-100}zzz\r\n"))
        self.assertIn(b"a4 BAD", self.c.send(b"a4 SEARCH {-100}\r\n"))
        self.assertIn(b"a5 OK", self.c.send(b"a5 NOOP\r\n"))

    def test_non_synchronising_literal_over_limit_closes(self) -> None:
        """An over-limit LITERAL+ literal cannot be skipped: BAD, BYE and the connection closes."""
        out = self.c.send(b"a LOGIN {9000+}\r\n")
        self.assertIn(b"a BAD [TOOBIG]", out)
        self.assertIn(b"* BYE", out)
        self.assertTrue(self.c.transport.disconnecting)

    def test_literal_plus_accepted_without_continuation(self) -> None:
        """A small {n+} literal is read without a '+' continuation (RFC 7888)."""
        c = Client(self.world, tls="implicit")
        out = c.send(b"a LOGIN {17+}\r\nalice@example.com secret\r\n")
        self.assertFalse(_has_continuation(out))
        self.assertIn(b"a OK", out)

    def test_append_literal_capped_by_setting_read_at_use(self) -> None:
        """APPEND over imap.max_literal gets NO [TOOBIG] before any '+'; a change applies at once."""
        self.c.login()
        self.assertTrue(_has_continuation(self.c.send(b"a APPEND INBOX {20000}\r\n")))
        self.c.send(b"x" * 20000 + b"\r\n")
        from cgtwist.settings import Settings

        self.world.settings.replace(Settings({"imap.max_literal": 10000}))
        out = self.c.send(b"b APPEND INBOX {20000}\r\n")
        self.assertEqual(out, b"b NO [TOOBIG] Message too large\r\n")
        self.assertIn(b"c OK", self.c.send(b"c NOOP\r\n"))

    def test_non_append_literal_capped_small(self) -> None:
        """Literals outside APPEND are capped at a few KiB even after login."""
        self.c.login()
        out = self.c.send(b"a CREATE {100000}\r\n")
        self.assertTrue(out.startswith(b"a BAD [TOOBIG]"), out)
        out = self.c.send(b"b APPEND {100000}\r\n")  # the mailbox name is not the message
        self.assertTrue(out.startswith(b"b BAD [TOOBIG]"), out)

    def test_long_line_rejected_and_session_continues(self) -> None:
        """A line over imap.max_command_length gets BAD; the next command works."""
        c = Client(World({"imap.max_command_length": 1000}))
        out = c.send(b"a NOOP " + b"x" * 5000)
        self.assertIn(b"BAD [TOOBIG]", out)
        self.assertEqual(c.send(b"y" * 5000), b"")
        out = c.send(b"yyy\r\nb NOOP\r\n")
        self.assertEqual(out, b"b OK NOOP No operation performed\r\n")

    def test_deep_nesting_rejected(self) -> None:
        """10,000 nested parentheses get BAD without recursion errors."""
        self.c.login()
        self.c.select()
        out = self.c.send(b"a FETCH 1 " + b"(" * 10000 + b"FLAGS" + b")" * 10000 + b"\r\n")
        self.assertTrue(out.startswith(b"a BAD"), out[:80])
        out = self.c.send(b"b SEARCH " + b"(" * 10000 + b"ALL" + b")" * 10000 + b"\r\n")
        self.assertTrue(out.startswith(b"b BAD"), out[:80])

    def test_long_item_lists_rejected(self) -> None:
        """Thousands of flags, FETCH items or STATUS items get BAD (Twisted's parsers are quadratic)."""
        self.c.login()
        self.c.select()
        out = self.c.send(b"a STORE 1 +FLAGS (" + b" ".join([b"\\Seen"] * 2000) + b")\r\n")
        self.assertTrue(out.startswith(b"a BAD"), out[:80])
        out = self.c.send(b"b FETCH 1 (" + b" ".join([b"FLAGS"] * 2000) + b")\r\n")
        self.assertTrue(out.startswith(b"b BAD"), out[:80])
        out = self.c.send(b"c STATUS INBOX (" + b" ".join([b"MESSAGES"] * 2000) + b")\r\n")
        self.assertTrue(out.startswith(b"c BAD"), out[:80])
        self.assertIn(b"d OK", self.c.send(b"d FETCH 1 (FLAGS UID)\r\n"))

    def test_too_many_search_terms(self) -> None:
        """SEARCH with thousands of OR terms gets BAD instead of exhausting the stack."""
        self.c.login()
        self.c.select()
        out = self.c.send(b"a SEARCH " + b"OR ALL " * 5000 + b"ALL\r\n")
        self.assertTrue(out.startswith(b"a BAD"), out[:80])

    def test_bad_commands(self) -> None:
        """Unknown commands, bad tags and wrong-state commands get BAD and change nothing."""
        self.assertIn(b"a BAD", self.c.send(b"a FROBNICATE\r\n"))
        self.assertIn(b"b BAD", self.c.send(b"b SELECT INBOX\r\n"))
        self.assertIn(b"* BAD", self.c.send(b"+x NOOP\r\n"))
        self.assertIn(b"c BAD", self.c.send(b"c\r\n"))
        self.assertIn(b"d OK", self.c.send(b"d NOOP\r\n"))

    def test_pipelined_commands_answered_in_order(self) -> None:
        """Pipelined commands run one after another and are answered in order."""
        c = Client(self.world, tls="implicit")
        out = c.send(b"a LOGIN alice@example.com secret\r\nb SELECT INBOX\r\nc NOOP\r\n")
        self.assertLess(out.index(b"a OK"), out.index(b"b OK"))
        self.assertLess(out.index(b"b OK"), out.index(b"c OK"))


class TimeoutTests(unittest.TestCase):
    def test_preauth_timeout(self) -> None:
        """An unauthenticated connection is closed after imap.preauth_timeout of silence."""
        w = World({"imap.preauth_timeout": 30})
        c = Client(w)
        w.clock.advance(29)
        self.assertFalse(c.transport.disconnecting)
        w.clock.advance(2)
        self.assertIn(b"* BYE", c.take())
        self.assertTrue(c.transport.disconnecting)

    def test_authenticated_and_idle_timeout(self) -> None:
        """After login the session survives 29 minutes of IDLE and is closed at imap.idle_timeout."""
        w = World()
        c = Client(w)
        c.login()
        c.select()
        c.send(b"i IDLE\r\n")
        w.clock.advance(29 * 60)
        self.assertFalse(c.transport.disconnecting)
        c.send(b"DONE\r\n")
        c.send(b"j IDLE\r\n")
        w.clock.advance(1801)
        self.assertIn(b"* BYE", c.take())
        self.assertTrue(c.transport.disconnecting)

    def test_connection_limit_per_ip(self) -> None:
        """More than access.max_connections_per_ip connections from one IP get BYE at once."""
        w = World({"access.max_connections_per_ip": 2})
        f = w.factory()
        a, b = Client(w, factory=f), Client(w, factory=f)
        c = Client(w, factory=f)
        self.assertIn(b"* BYE", c.greeting)
        self.assertTrue(c.transport.disconnecting)
        c.close()
        a.close()
        d = Client(w, factory=f)
        self.assertIn(b"* OK", d.greeting)
        self.assertIsNotNone(b)


_FUZZ_WORLD = World()
_UNAUTH_COMMANDS = [
    c.encode()
    for c in (
        "LOGIN",
        "AUTHENTICATE PLAIN",
        "AUTHENTICATE",
        "STARTTLS",
        "CAPABILITY",
        "ID",
        "NOOP",
        "SELECT",
        "LOGIN {5}",
    )
]
_COMMANDS = [
    c.encode()
    for c in (
        "FETCH",
        "UID FETCH",
        "STORE",
        "UID STORE",
        "SEARCH",
        "UID SEARCH",
        "SORT",
        "UID SORT",
        "THREAD",
        "UID THREAD",
        "COPY",
        "UID COPY",
        "MOVE",
        "UID MOVE",
        "UID EXPUNGE",
        "STATUS",
        "LIST",
        "LSUB",
        "SELECT",
        "EXAMINE",
        "CREATE",
        "RENAME",
        "SUBSCRIBE",
        "APPEND",
        "ID",
        "ENABLE",
        "NAMESPACE",
        "CHECK",
        "EXPUNGE",
        "UNSELECT",
        "CLOSE",
    )
]
_FUZZ_WORLD.deliver("alice@example.com")


class InputPauseTests(unittest.TestCase):
    def test_waiting_client_never_paused_pipelined_input_is(self) -> None:
        """A client that waits for each reply is served without pausing and resuming its
        socket around every command (two system calls each); input that arrives while a
        command still runs does pause reading until the tagged reply, and is then answered
        in order."""
        from twisted.internet import defer

        c = Client(World())
        c.login()
        c.select()
        self.assertIn(b"n OK", c.send(b"n NOOP\r\n"))
        self.assertEqual(c.transport.producerState, "producing")
        slow: defer.Deferred[None] = defer.Deferred()
        c.proto.mbox.refresh_now = lambda: slow
        self.assertEqual(c.send(b"a NOOP\r\n"), b"")  # runs after the (slow) rescan
        self.assertEqual(c.transport.producerState, "producing")
        self.assertEqual(c.send(b"b NOOP\r\n"), b"")  # came while a ran: reading paused
        self.assertEqual(c.transport.producerState, "paused")
        c.proto.mbox.refresh_now = lambda: None
        slow.callback(None)
        out = c.take()
        self.assertLess(out.index(b"a OK"), out.index(b"b OK"))
        self.assertEqual(c.transport.producerState, "producing")


class ArgumentParserTests(unittest.TestCase):
    def test_arguments_are_parsed_in_one_call_with_twisteds_replies(self) -> None:
        """The server runs each command's argument parsers itself, without a Deferred per
        parser (CgIMAP4Server._run_entry); what a client sees is what Twisted's dispatch
        gave: BAD with the parser's reason, the literal of an argument, the handler run."""
        world = World()
        world.deliver("alice@example.com")
        c = Client(world)
        c.login()
        c.select()
        self.assertEqual(
            c.send(b"a NOOP extra\r\n"),
            b"a BAD Illegal syntax: Too many arguments for command: b'extra'\r\n",
        )
        self.assertEqual(
            c.send(b"b STORE x +FLAGS (\\Seen)\r\n"),
            b"b BAD Illegal syntax: Bad message number\r\n",
        )
        self.assertEqual(
            c.send(b"c STATUS INBOX (MESSAGES\r\n"),
            b"c BAD Illegal syntax: Mismatched parenthesis\r\n",
        )
        self.assertEqual(
            c.send(b"d STORE 1 +FLAGS.SILENT (\\Seen)\r\n"), b"d OK STORE completed\r\n"
        )
        self.assertEqual(c.send(b"e COPY 1 {5}\r\n"), b"+ Ready for literal data\r\n")
        self.assertIn(b"e OK [COPYUID ", c.send(b"Trash\r\n"))
        self.assertIn(b"* 1 FETCH (FLAGS (\\Seen", c.send(b"f FETCH 1 (FLAGS)\r\n"))


class RobustnessTests(unittest.TestCase):
    def test_unexpected_exception_becomes_serverbug(self) -> None:
        """A bug in the store gives `NO [SERVERBUG]`, is logged, and the session goes on."""
        world = World()
        c = Client(world)
        c.login()

        def broken(ref: bytes, pattern: bytes) -> None:
            raise RuntimeError("disk on fire")

        c.proto.account.listMailboxes = broken
        out = c.send(b'l LIST "" *\r\n')
        self.assertEqual(out, b"l NO [SERVERBUG] Internal error, try again later\r\n")
        self.assertNotIn(b"fire", out)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn(b"n OK", c.send(b"n NOOP\r\n"))

    @settings(max_examples=400, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.binary(max_size=80).filter(lambda b: b"\n" not in b and b"\r" not in b),
                st.builds(
                    lambda c, a: c + b" " + a.encode(),
                    st.sampled_from(_COMMANDS),
                    st.text(
                        alphabet='()[]<>."\\*%:,0123456789 ABCDEFHIKLMNOPRSTUVXYZ$', max_size=60
                    ),
                ),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def test_random_commands_never_break_the_session(self, lines: list[bytes]) -> None:
        """Random command lines in the selected state never leak errors or wedge the session."""
        c = Client(_FUZZ_WORLD)
        c.login()
        c.select()
        out = b""
        for n, line in enumerate(lines):
            out += c.send(b"f%d " % n + line.replace(b"{", b"(") + b"\r\n")
        if c.transport.disconnecting:
            return
        if c.proto._idle_tag is not None:
            out += c.send(b"DONE\r\n")  # a random line may be a bare IDLE (RFC 2177)
        out += c.send(b"zz NOOP\r\n")
        self.assertIn(b"zz OK", out)
        self.assertNotIn(b"Traceback", out)
        self.assertNotIn(b"Server error", out)
        self.assertNotIn(b"SERVERBUG", out)
        c.close()

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.builds(
                lambda c, a: c + b" " + a.encode(),
                st.sampled_from(_UNAUTH_COMMANDS),
                st.text(alphabet='()"\\{}+*%0123456789 =ABCDLNPTaeilx@.', max_size=40),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def test_random_commands_before_login(self, lines: list[bytes]) -> None:
        """Random pre-login commands (literal markers included) get tagged answers, never a hang."""
        c = Client(_FUZZ_WORLD, tls="implicit")
        out = b""
        for n, line in enumerate(lines):
            out += c.send(b"p%d " % n + line + b"\r\n")
            if out.rstrip().endswith(b"+ Ready for literal data"):
                out += c.send(b"x" * 8 + b"\r\n")  # finish a synchronising literal
        if c.proto._literal_left:  # a literal announced by the random text: complete it
            out += c.send(b"x" * c.proto._literal_left)
        out += c.send(b"\r\nzz NOOP\r\n")
        for _ in range(8):  # let delayed login failures answer, one after another
            _FUZZ_WORLD.clock.advance(20)
        out += c.take()
        if c.transport.disconnecting:
            return
        self.assertIn(b"zz OK", out)
        self.assertNotIn(b"SERVERBUG", out)
        c.close()


class LogoutTests(unittest.TestCase):
    def test_nothing_runs_after_logout(self) -> None:
        """Commands pipelined after LOGOUT are not executed; the server says BYE and closes."""
        c = Client(World(), tls="implicit")
        out = c.send(b"a LOGOUT\r\nb LOGIN alice@example.com secret\r\n")
        self.assertEqual(out, b"* BYE Logging out\r\na OK LOGOUT completed\r\n")
        self.assertTrue(c.transport.disconnecting)


class SharedPenaltyTests(unittest.TestCase):
    def test_shared_auth_penalty_object(self) -> None:
        """The project's AuthPenalty plugs in: delays apply and its concurrency cap is honoured."""
        from cgtwist.checks.authpenalty import AuthPenalty
        from cgtwist.protocols.imap.server import IMAPFactory
        from cgtwist.types import ListenerSpec
        from tests.protocols.test_imap_support import Client as _Client

        world = World({"auth.fail_delays": [3]})
        penalty = AuthPenalty(world.clock, world.settings)
        f = IMAPFactory(
            ListenerSpec("imap", 993, tls="implicit"),
            world.settings,
            world.portal,
            lambda: None,
            "mail.example.com",
            world.clock,
            penalty=penalty,
        )
        c = _Client(world, factory=f)
        self.assertEqual(c.send(b"a LOGIN alice@example.com nope\r\n"), b"")
        world.clock.advance(3)
        self.assertIn(b"a NO [AUTHENTICATIONFAILED]", c.take())
        self.assertEqual(penalty.failures("192.0.2.10"), 1)
        self.assertIn(b"b OK", c.send(b"b LOGIN alice@example.com secret\r\n"))
        self.assertEqual(penalty.failures("192.0.2.10"), 0)


class ShutdownTests(unittest.TestCase):
    def test_shutdown_says_bye_and_fires_when_all_closed(self) -> None:
        """On shutdown every session gets `* BYE` (an IDLE one at once) and new ones are refused."""
        world = World()
        f = world.factory(tls="implicit")
        a = Client(world, factory=f)
        b = Client(world, ip="192.0.2.11", factory=f)
        b.login()
        b.select()
        b.send(b"i IDLE\r\n")
        done = f.shutdown()
        self.assertNoResult(done)
        for c in (a, b):
            self.assertIn(b"* BYE Server shutting down", c.take())
            self.assertTrue(c.transport.disconnecting)
        late = Client(world, ip="192.0.2.12", factory=f)
        self.assertIn(b"* BYE", late.greeting)
        for c in (a, b, late):
            c.close()
        self.successResultOf(done)

    def test_shutdown_waits_for_running_command(self) -> None:
        """A command in progress gets its tagged reply before the BYE."""
        world = World({"auth.fail_delays": [5]})
        f = world.factory(tls="implicit")
        c = Client(world, factory=f)
        c.send(b"a LOGIN alice@example.com wrong\r\n")
        f.shutdown()
        self.assertEqual(c.take(), b"")
        world.clock.advance(5)
        out = c.take()
        self.assertLess(out.index(b"a NO"), out.index(b"* BYE"))
        self.assertTrue(c.transport.disconnecting)
