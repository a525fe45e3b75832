"""Table-driven tests and properties of the pure Router (cgtwist.router)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist import router
from cgtwist.router import (
    AccountQuery,
    AliasQuery,
    DomainQuery,
    Record,
    RouterParseError,
    StaticFacts,
    parse_table,
    resolve_with,
    split_address,
)

MAIN = "company.com"

FACTS = StaticFacts(
    domains=frozenset({"company.com", "client2.com", "new.dom", "other.dom"}),
    accounts=frozenset(
        {
            "alice@company.com",
            "bob@company.com",
            "joe@new.dom",
            "info@client2.com",
            "user@other.dom",
            "x@company.com",
        }
    ),
    aliases={
        "al@company.com": "alice",
        "chain1@company.com": "chain2@company.com",
        "chain2@company.com": "bob@company.com",
        "ext@company.com": "friend@far.dom",
        "loopa@company.com": "loopb",
        "loopb@company.com": "loopa",
        "prog@company.com": '"filter --x"@pipe',
        "evil@company.com": '"../bin/sh"@pipe',
    },
)

TABLE = """\
; test table
<*@old.dom> = *@new.dom
Relay:<report-*@company.com> = report-*@partner.com ; virtual, forwards off-site
RelayAll:<stats-*@company.com> = *@partner.com
NoRelay:<*@nr.dom> = *@far.dom
NoRelay:Mail:<*@nr.dom> = *@company.com
NoRelay:<keep@company.com> = x@company.com
<bad@company.com> = error
<worse@company.com> = error:5.7.1 go away
<plain-*@company.com> = error:no mail for *
<trash> = null
<run-*@company.com> = "prog *"@pipe
<hack-*@company.com> = "*"@pipe
<ip@company.com> = joe@[10.0.0.1]
<loop1@company.com> = loop2@company.com
<loop2@company.com> = loop1@company.com
<moved@old2.dom> = @new.dom
<Mixed*@Case.Dom> = alice
Access:<login-*> = *
Mail:<mailonly@company.com> = bob
Signal:<sig@company.com> = bob
<postmaster> = alice
"""


def route(
    address: str, kind: str = "mail", table: str = TABLE, max_hops: int = 10
) -> router.Resolution:
    return resolve_with(FACTS, parse_table(table), address, MAIN, kind, max_hops)


class RouteTableTests(unittest.TestCase):
    """Each row: an address as a sender would write it, and where the mail ends up."""

    ROWS = [
        # (address, kind, str(route), relay, error)
        ("alice@company.com", "mail", "LOCAL(alice@company.com)alice@company.com", False, ""),
        ("ALICE@Company.COM", "mail", "LOCAL(alice@company.com)alice@company.com", False, ""),
        ("alice", "mail", "LOCAL(alice@company.com)alice@company.com", False, ""),
        ("<alice@company.com>", "mail", "LOCAL(alice@company.com)alice@company.com", False, ""),
        ('"alice"@company.com', "mail", "LOCAL(alice@company.com)alice@company.com", False, ""),
        ("joe@old.dom", "mail", "LOCAL(joe@new.dom)joe@new.dom", False, ""),
        ("JOE@OLD.DOM", "mail", "LOCAL(joe@new.dom)joe@new.dom", False, ""),
        ("report-q3@company.com", "mail", "SMTP(partner.com)report-q3@partner.com", True, ""),
        ("stats-daily@company.com", "mail", "SMTP(partner.com)daily@partner.com", True, ""),
        ("x@nr.dom", "mail", "LOCAL(x@company.com)x@company.com", False, ""),
        ("x@nr.dom", "signal", "SMTP(nr.dom)x@nr.dom", False, ""),
        ("keep@company.com", "mail", "LOCAL(x@company.com)x@company.com", False, ""),
        ("bad@company.com", "mail", "ERROR()bad@company.com", False, "5.1.1 address rejected"),
        ("worse@company.com", "mail", "ERROR()worse@company.com", False, "5.7.1 go away"),
        (
            "plain-Joe@company.com",
            "mail",
            "ERROR()plain-Joe@company.com",
            False,
            "5.1.1 no mail for Joe",
        ),
        ("trash", "mail", "NULL()trash@company.com", False, ""),
        ("trash@COMPANY.com", "mail", "NULL()trash@company.com", False, ""),
        ("run-a1@company.com", "mail", 'PIPE(prog)"prog a1"@pipe', False, ""),
        ("evil@company.com", "mail", 'ERROR()"../bin/sh"@pipe', False, router.BAD_PROGRAM),
        ("hack-.x@company.com", "mail", 'ERROR()".x"@pipe', False, router.BAD_PROGRAM),
        ("hack-ls@company.com", "mail", 'PIPE(ls)"ls"@pipe', False, ""),
        ("prog@company.com", "mail", 'PIPE(filter)"filter --x"@pipe', False, ""),
        ('"sh"@pipe', "mail", 'SMTP(pipe)"sh"@pipe', False, ""),
        ("ip@company.com", "mail", "SMTP([10.0.0.1])joe@[10.0.0.1]", False, ""),
        ("a@[127.0.0.2]", "mail", "SMTP([127.0.0.2])a@[127.0.0.2]", False, ""),
        ("a@[IPv6:::1]", "mail", "SMTP([IPv6:::1])a@[IPv6:::1]", False, ""),
        ("a@[300.1.1.1]", "mail", "ERROR()a@[300.1.1.1]", False, router.BAD_DOMAIN),
        ("moved@old2.dom", "mail", "ERROR()moved@new.dom", False, router.UNKNOWN_USER),
        ("mixedUP@case.dom", "mail", "LOCAL(alice@company.com)alice@company.com", False, ""),
        ("al@company.com", "mail", "LOCAL(alice@company.com)alice@company.com", False, ""),
        ("chain1@company.com", "mail", "LOCAL(bob@company.com)bob@company.com", False, ""),
        ("ext@company.com", "mail", "SMTP(far.dom)friend@far.dom", False, ""),
        ("nobody@company.com", "mail", "ERROR()nobody@company.com", False, router.UNKNOWN_USER),
        ("nobody@other.dom", "mail", "ERROR()nobody@other.dom", False, router.UNKNOWN_USER),
        ("someone@far.dom", "mail", "SMTP(far.dom)someone@far.dom", False, ""),
        ("Someone@FAR.dom.", "mail", "SMTP(far.dom)Someone@far.dom", False, ""),
        ("joe@bücher.de", "mail", "SMTP(xn--bcher-kva.de)joe@xn--bcher-kva.de", False, ""),
        ("joe@bad..domain.com", "mail", "ERROR()joe@bad..domain.com", False, router.BAD_DOMAIN),
        ("joe@-bad.com", "mail", "ERROR()joe@-bad.com", False, router.BAD_DOMAIN),
        ("joe@under_score.com", "mail", "SMTP(under_score.com)joe@under_score.com", False, ""),
        ("postmaster", "mail", "LOCAL(alice@company.com)alice@company.com", False, ""),
        ("PostMaster@company.com", "mail", "LOCAL(alice@company.com)alice@company.com", False, ""),
        ("mailonly@company.com", "mail", "LOCAL(bob@company.com)bob@company.com", False, ""),
        (
            "mailonly@company.com",
            "access",
            "ERROR()mailonly@company.com",
            False,
            router.UNKNOWN_USER,
        ),
        ("sig@company.com", "signal", "LOCAL(bob@company.com)bob@company.com", False, ""),
        ("sig@company.com", "mail", "ERROR()sig@company.com", False, router.UNKNOWN_USER),
        # Access: login names, aliases and % (COMMUNIGATE.md a.1)
        ("login-alice", "access", "LOCAL(alice@company.com)alice@company.com", False, ""),
        ("login-alice", "mail", "ERROR()login-alice@company.com", False, router.UNKNOWN_USER),
        ("al", "access", "LOCAL(alice@company.com)alice@company.com", False, ""),
        ("info%client2.com", "access", "LOCAL(info@client2.com)info@client2.com", False, ""),
        ("ext@company.com", "access", "ERROR()friend@far.dom", False, router.NOT_LOCAL),
        ("trash", "access", "ERROR()trash@company.com", False, router.NOT_LOCAL),
        # % forms, source routes, ! paths and the main-domain restart
        ("user%other.dom@company.com", "mail", "LOCAL(user@other.dom)user@other.dom", False, ""),
        ("user%far.dom@company.com", "mail", "SMTP(far.dom)user@far.dom", False, ""),
        ("user%far.dom", "mail", "SMTP(far.dom)user@far.dom", False, ""),
        ("user%far.dom%company.com@company.com", "mail", "SMTP(far.dom)user@far.dom", False, ""),
        ("user%far.dom@relay.net", "mail", "SMTP(relay.net)user%far.dom@relay.net", False, ""),
        (
            "user%far.dom@other.dom",
            "mail",
            "ERROR()user%far.dom@other.dom",
            False,
            router.UNKNOWN_USER,
        ),
        ("<@company.com:user@far.dom>", "mail", "SMTP(far.dom)user@far.dom", False, ""),
        ("<@hop.net:user@far.dom>", "mail", "SMTP(hop.net)user%far.dom@hop.net", False, ""),
        (
            "<@hop1.net,@hop2.net:user@far.dom>",
            "mail",
            "SMTP(hop1.net)user%far.dom%hop2.net@hop1.net",
            False,
            "",
        ),
        ("far.dom!user", "mail", "SMTP(far.dom)user@far.dom", False, ""),
        ("hop.net!far.dom!user", "mail", "SMTP(hop.net)user%far.dom@hop.net", False, ""),
        ("far.dom!user@company.com", "mail", "SMTP(far.dom)user@far.dom", False, ""),
        ("other.dom!user@company.com", "mail", "LOCAL(user@other.dom)user@other.dom", False, ""),
        ('"user@far.dom"@company.com', "mail", "SMTP(far.dom)user@far.dom", False, ""),
        ("user@far.dom@company.com", "mail", "SMTP(far.dom)user@far.dom", False, ""),
        # bad syntax
        ("", "mail", "ERROR()", False, router.BAD_SYNTAX),
        ("a b@company.com", "mail", "ERROR()a b@company.com", False, router.BAD_SYNTAX),
        ('"open@company.com', "mail", 'ERROR()"open@company.com', False, router.BAD_SYNTAX),
        ("@company.com", "mail", "ERROR()@company.com", False, router.BAD_SYNTAX),
        ("user@", "mail", "ERROR()user@", False, router.BAD_SYNTAX),
        ("a!!b", "mail", "ERROR()a!!b", False, router.BAD_SYNTAX),
    ]

    def test_rows(self) -> None:
        """Every address in the table routes to the documented module(queue)address, relay flag and error."""
        for address, kind, expected, relay, error in self.ROWS:
            result = route(address, kind)
            got = (str(result.route), result.route.relay, result.route.error)
            self.assertEqual(got, (expected, relay, error), f"{address!r} ({kind})")


class TableSemanticsTests(unittest.TestCase):
    """First match, re-routing from the top, loop limits and NoRelay back-tracking."""

    def test_first_match_wins(self) -> None:
        """Of two records matching the same address, only the upper one is used."""
        table = "<*@x.dom> = alice\n<joe@x.dom> = bob\n"
        self.assertEqual(route("joe@x.dom", table=table).route.queue, "alice@company.com")
        table = "<joe@x.dom> = bob\n<*@x.dom> = alice\n"
        self.assertEqual(route("joe@x.dom", table=table).route.queue, "bob@company.com")

    def test_rewrite_is_routed_from_the_top(self) -> None:
        """A rewritten address is matched against all records again, including those above."""
        table = "<b@x.dom> = bob\n<a@x.dom> = b@x.dom\n"
        result = route("a@x.dom", table=table)
        self.assertEqual(str(result.route), "LOCAL(bob@company.com)bob@company.com")
        self.assertEqual([s.line for s in result.steps if s.action == "record"], [2, 1])
        self.assertEqual(result.hops, 2)

    def test_loop_gives_5_4_6(self) -> None:
        """Records that rewrite in a circle stop with a permanent 5.4.6 instead of hanging."""
        result = route("loop1@company.com")
        self.assertEqual(result.route.module, "ERROR")
        self.assertEqual(result.route.error, "5.4.6 routing loop detected")
        self.assertEqual(result.hops, 10)

    def test_alias_loop_gives_5_4_6(self) -> None:
        """Aliases pointing at each other end with 5.4.6 too."""
        self.assertEqual(route("loopa@company.com").route.error, router.LOOP)

    def test_loop_limit_is_exact_and_configurable(self) -> None:
        """A chain of exactly max_hops rewrites is delivered; one more is a loop."""
        chain = (
            "".join(f"<c{i}@x.dom> = c{i + 1}@x.dom\n" for i in range(12)) + "<c12@x.dom> = bob\n"
        )
        self.assertEqual(route("c3@x.dom", table=chain).route.module, "LOCAL")  # 10 rewrites
        self.assertEqual(route("c2@x.dom", table=chain).route.error, router.LOOP)  # 11
        self.assertEqual(route("c10@x.dom", table=chain, max_hops=3).route.module, "LOCAL")
        self.assertEqual(route("c9@x.dom", table=chain, max_hops=3).route.error, router.LOOP)

    def test_wildcard_substitution_keeps_case(self) -> None:
        """The text the left '*' matched is put into the right side as the sender wrote it."""
        table = "<*@Old.DOM> = *@remote.net\n"
        self.assertEqual(
            str(route("Joe.Smith@old.dom", table=table).route),
            "SMTP(remote.net)Joe.Smith@remote.net",
        )

    def test_wildcard_in_the_middle_and_empty(self) -> None:
        """'*' may stand in the middle and may match nothing."""
        table = "<a*z@x.dom> = *@remote.net\n"
        self.assertEqual(route("abcz@x.dom", table=table).route.address, "bc@remote.net")
        self.assertEqual(route("az@x.dom", table=table).route.address, "@remote.net")
        self.assertEqual(route("az@x.dom", table=table).route.module, "ERROR")
        self.assertEqual(
            route("a@x.dom", table=table).route.module, "SMTP"
        )  # 'a' < 'a'+'z': no match

    def test_percent_form_via_relay_host(self) -> None:
        """'*%domain@relayhost' sends the mail to the relay host with the final domain kept in '%'."""
        result = route("joe@x.dom", table="<*@x.dom> = *%x.dom@smarthost.net\n")
        self.assertEqual(str(result.route), "SMTP(smarthost.net)joe%x.dom@smarthost.net")

    def test_unprefixed_record_off_site_is_not_marked_relay(self) -> None:
        """An unprefixed record that leads off-site leaves relay False, so the relay policy applies."""
        result = route("joe@x.dom", table="<*@x.dom> = *@far.dom\n")
        self.assertEqual((result.route.module, result.route.relay), ("SMTP", False))

    def test_norelay_only_when_result_local(self) -> None:
        """A NoRelay: record that would send mail off-site is skipped and shows up as skipped."""
        result = route("joe@x.dom", table="NoRelay:<*@x.dom> = *@far.dom\n")
        self.assertEqual(str(result.route), "SMTP(x.dom)joe@x.dom")
        self.assertEqual([s.action for s in result.steps], ["skipped", "route"])
        result = route("bob@x.dom", table="NoRelay:<*@x.dom> = *@company.com\n")
        self.assertEqual(str(result.route), "LOCAL(bob@company.com)bob@company.com")

    def test_norelay_backtracking_terminates(self) -> None:
        """Many NoRelay records that all lead off-site still finish quickly with a route."""
        table = "".join(f"NoRelay:<*@x{i}.dom> = *@x{i + 1}.dom\n" for i in range(40))
        table += "".join("NoRelay:<*> = *@far.dom\n" for _ in range(20))
        result = route("joe@x0.dom", table=table)
        self.assertIn(result.route.module, ("SMTP", "ERROR"))

    def test_relay_flag_survives_aliases(self) -> None:
        """A Relay: record that leads to an alias pointing off-site still marks the route."""
        result = route("v@company.com", table="Relay:<v@company.com> = ext@company.com\n")
        self.assertEqual(
            (str(result.route), result.route.relay), ("SMTP(far.dom)friend@far.dom", True)
        )

    def test_trace_lists_every_record_and_hop(self) -> None:
        """The trace names each matched record's line, each alias hop and ends with the route."""
        table = "<*@old.dom> = al@company.com ; moved\n"
        steps = route("Joe@old.dom", table=table).steps
        self.assertEqual([s.action for s in steps], ["record", "alias", "qualify", "route"])
        self.assertEqual(
            str(steps[0]),
            "line 1: <*@old.dom> = al@company.com ; moved: Joe@old.dom -> al@company.com",
        )
        self.assertEqual(
            str(steps[-1]), "route: alice@company.com -> LOCAL(alice@company.com)alice@company.com"
        )

    def test_facts_asked_in_order(self) -> None:
        """The generator asks for the domain, then the account, the mailing list (an object of
        the domain like an account), then the alias, then the forwarder or group, nothing
        more."""
        gen = router.resolve(parse_table(""), "Al@Other.DOM", MAIN)
        self.assertEqual(gen.send(None), DomainQuery("other.dom"))
        self.assertEqual(gen.send(True), AccountQuery("Al", "other.dom"))
        self.assertEqual(gen.send(None), router.ListQuery("Al", "other.dom"))
        self.assertEqual(gen.send(None), AliasQuery("Al", "other.dom"))
        self.assertEqual(gen.send(None), router.GroupQuery("Al", "other.dom"))
        with self.assertRaises(StopIteration) as cm:
            gen.send(None)
        self.assertEqual(cm.exception.value.route.error, router.UNKNOWN_USER)

    def test_main_domain_is_always_local(self) -> None:
        """Mail for the main domain is never sent out by SMTP, even if the store forgot the domain."""
        facts = StaticFacts(accounts=frozenset({"alice@company.com"}))
        result = resolve_with(facts, parse_table(""), "alice@company.com", MAIN)
        self.assertEqual(result.route.module, "LOCAL")
        self.assertEqual(
            resolve_with(facts, parse_table(""), "bob", MAIN).route.error, router.UNKNOWN_USER
        )

    def test_hostile_long_names_end_quickly(self) -> None:
        """Huge or deeply nested names (e.g. an IMAP login) get an answer, not a hang or a crash."""
        nested = "nobody" + "%company.com" * 80 + "@company.com"  # 80 main-domain restarts
        self.assertEqual(route(nested).route.error, router.UNKNOWN_USER)
        deeper = "x" + "%company.com" * 300 + "@company.com"
        self.assertIn(route(deeper).route.error, (router.LOOP, router.BAD_SYNTAX))
        self.assertEqual(
            route("a@" * 40000 + "company.com", "access").route.error, router.BAD_SYNTAX
        )
        self.assertEqual(route("a" * 2000 + "@far.dom").route.error, router.BAD_SYNTAX)

    def test_bad_kind(self) -> None:
        """An unknown kind is a programming error, not a route."""
        self.assertRaises(ValueError, route, "a@b.c", "web")


class SplitAddressTests(unittest.TestCase):
    """Address analysis: the domain is the next hop, the rest is a canonical '%' local part."""

    def test_forms(self) -> None:
        """All documented forms give CommuniGate's (local, domain) split."""
        rows = [
            ("xxxx@yyyyy.dom", ("xxxx", "yyyyy.dom")),
            ("<@zzzz.dom:xxxx@yyyyy.dom>", ("xxxx%yyyyy.dom", "zzzz.dom")),
            ("zzzz.dom!yyyyy.dom!xxxx", ("xxxx%yyyyy.dom", "zzzz.dom")),
            ("xxxx%yyyyy.dom@zzzz.dom", ("xxxx%yyyyy.dom", "zzzz.dom")),
            ("local%d1%d2@d3.dom", ("local%d1%d2", "d3.dom")),
            ("a%b%c", ("a%b", "c")),
            ("name", ("name", "")),
            ('"a@b c"@d.dom', ('"a@b c"', "d.dom")),
            ('"a\\"b"@d.dom', ('"a\\"b"', "d.dom")),
        ]
        for text, expected in rows:
            self.assertEqual(split_address(text), expected, text)

    def test_plain_addresses_and_their_edges(self) -> None:
        """A plain local@domain splits at its '@' with the domain normalised; one without a
        local part or domain, with white space (also Unicode's) or a bad domain is refused
        as before, and a second '@' or a leading one still reads as CommuniGate's forms."""
        self.assertEqual(split_address(" User1@D001.Bench. "), ("User1", "d001.bench"))
        self.assertEqual(split_address("x@[192.0.2.1]"), ("x", "[192.0.2.1]"))
        self.assertEqual(split_address("a!b@c.dom"), ("a!b", "c.dom"))
        self.assertEqual(split_address("a@b@c.dom"), ("a%b", "c.dom"))
        for bad in ("@c.dom", "a@", "a b@c.dom", "a\u00a0b@c.dom", "a@c_.dom-", "a@[1.2.3]"):
            self.assertRaises(router.AddressError, split_address, bad)

    def test_pipe_command(self) -> None:
        """PIPE addresses give argv without a shell; unsafe program names are refused."""
        self.assertEqual(router.pipe_command("\"prog -a 'b c'\"@pipe"), ["prog", "-a", "b c"])
        for bad in (
            '"/bin/sh"@pipe',
            '".hidden"@pipe',
            '"a\\\\b"@pipe',
            '"x ../y"@pipe',
            '""@pipe',
        ):
            self.assertRaises(ValueError, router.pipe_command, bad)


class ParseTests(unittest.TestCase):
    """The table parser: prefixes, comments, and errors that name the line."""

    def test_prefixes(self) -> None:
        """Every relay and type prefix is recognised, in any letter case, with or without spaces."""
        table = parse_table(
            "Relay:<a> = b\nRELAYALL: <a> = b\nnorelay:mail:<a> = b\nAccess:<a> = b\n"
            "Signal : <a> = b\nRelay:Signal:<a> = b\n<a>=b;c\n"
        )
        got = [(r.relay, r.kind, r.line, r.comment) for r in table.records]
        self.assertEqual(
            got,
            [
                ("Relay", "", 1, ""),
                ("RelayAll", "", 2, ""),
                ("NoRelay", "Mail", 3, ""),
                ("", "Access", 4, ""),
                ("", "Signal", 5, ""),
                ("Relay", "Signal", 6, ""),
                ("", "", 7, "c"),
            ],
        )
        self.assertEqual(
            [r.relays for r in table.records], [True, True, False, False, False, True, False]
        )

    def test_comments_and_blank_lines(self) -> None:
        """Blank lines and ';' or '#' comment lines are skipped but still counted for line numbers."""
        table = parse_table('; header\n\n# note\r\n  <a@b.c> = "x;y"@pipe ; why\r\n')
        (record,) = table.records
        self.assertEqual((record.line, record.right, record.comment), (4, '"x;y"@pipe', "why"))

    def test_errors_name_the_line(self) -> None:
        """Each kind of mistake is refused with its line number and a readable reason."""
        cases = [
            ("<a> = b\nfoo@bar = baz\n", 2, "expected"),
            ("\n\nBogus:<a> = b", 3, "unknown prefix Bogus:"),
            ("Mail:Relay:<a> = b", 1, "must come before"),
            ("Relay:NoRelay:<a> = b", 1, "more than one relay"),
            ("Mail:Access:<a> = b", 1, "more than one type"),
            ("<a = b", 1, "missing '>'"),
            ("<> = b", 1, "empty left"),
            ("<a b> = c", 1, "white space"),
            ("<a> b", 1, "expected '='"),
            ("<a> = ", 1, "empty right"),
            ("<a> =  ; only a comment", 1, "empty right"),
            ("<*a*> = b", 1, "more than one '*' on the left"),
            ("<*a> = *b*", 1, "more than one '*' on the right"),
            ("<a> = *@b.c", 1, "none on the left"),
            ('<a> = "open', 1, "unbalanced"),
            ("<a> = b c", 1, "bad right address"),
            ("<a> = b@bad..dom", 1, "bad right address"),
            ('<a> = "/bin/sh"@pipe', 1, "bad right address"),
            ("<a> = b\x00", 1, "control character"),
        ]
        for text, line, reason in cases:
            with self.assertRaises(RouterParseError, msg=text) as cm:
                parse_table(text)
            self.assertEqual(cm.exception.line, line, text)
            self.assertIn(reason, cm.exception.reason, text)
            self.assertTrue(str(cm.exception).startswith(f"line {line}: "))

    def test_render_round_trip(self) -> None:
        """A parsed table rendered back to text parses to the same records."""
        table = parse_table(TABLE)
        self.assertEqual(parse_table(table.render()), table)
        self.assertEqual(len(table.relay_records()), 2)


# --- Hypothesis properties ------------------------------------------------------------------

_atom = st.text(alphabet='abcxyz019-.*%!@"', min_size=1, max_size=12)
_prefix = st.sampled_from(["", "Relay:", "RelayAll:", "NoRelay:"])
_kind = st.sampled_from(["", "Mail:", "Access:", "Signal:"])
_right = st.one_of(
    st.sampled_from(
        [
            "error",
            "error:5.7.1 no",
            "null",
            "alice",
            "bob@company.com",
            "x@far.dom",
            "@new.dom",
            '"prog"@pipe',
            "*@far.dom",
            "*",
            "*@company.com",
            "*%far.dom",
            "u@[10.1.2.3]",
        ]
    ),
    _atom,
)
_comment = st.one_of(st.just(""), st.text(alphabet='abc xyz;<>="', max_size=10))


@st.composite
def _line(draw: st.DrawFn) -> str:
    left = draw(
        st.sampled_from(
            [
                "*@old.dom",
                "*",
                "a@company.com",
                "*@company.com",
                "*@x.dom",
                "a*",
                "loop@x.dom",
                "*%*",
            ]
        )
        | _atom
    )
    comment = draw(_comment)
    text = f"{draw(_prefix)}{draw(_kind)}<{left}> = {draw(_right)}"
    return f"{text} ; {comment}" if comment else text


_tables = st.lists(_line(), max_size=8).map("\n".join)


class PropertyTests(unittest.TestCase):
    """Properties that must hold for any input, not just the examples."""

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=200))
    def test_parser_raises_only_parse_errors(self, text: str) -> None:
        """Any text at all either parses or fails with RouterParseError naming an existing line."""
        try:
            parse_table(text)
        except RouterParseError as e:
            self.assertTrue(1 <= e.line <= text.count("\n") + 1)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
    @given(_tables)
    def test_round_trip(self, text: str) -> None:
        """Whatever parses renders to text that parses to the same records."""
        try:
            table = parse_table(text)
        except RouterParseError:
            return
        self.assertEqual(parse_table(table.render()), table)
        for record in table.records:
            self.assertEqual(parse_table(record.render()).records, (record,))

    @settings(max_examples=200, deadline=None)
    @given(
        _tables,
        st.sampled_from(
            [
                "joe@old.dom",
                "a@company.com",
                "x%far.dom@company.com",
                "a",
                "loop@x.dom",
                "al",
                "u@x.dom",
                "@a:b@c",
                "a!b!c",
            ]
        )
        | _atom,
        st.sampled_from(router.KINDS),
        st.integers(min_value=0, max_value=12),
    )
    def test_routing_terminates(self, text: str, address: str, kind: str, max_hops: int) -> None:
        """Any table and any address end in one route within the hop limit, never an exception."""
        try:
            table = parse_table(text)
        except RouterParseError:
            return
        result = resolve_with(FACTS, table, address, MAIN, kind, max_hops)
        self.assertIn(result.route.module, ("LOCAL", "SMTP", "PIPE", "NULL", "ERROR"))
        self.assertLessEqual(result.hops, max_hops)
        self.assertIn(result.steps[-1].action, ("route", "access"))
        if result.route.module == "ERROR":
            self.assertRegex(result.route.error, r"^[45]\.\d+\.\d+ ")
        if kind == "access":
            self.assertIn(result.route.module, ("LOCAL", "ERROR"))


class RecordTests(unittest.TestCase):
    def test_match_without_domain_means_main_domain(self) -> None:
        """A left side without '@' names an address in the main domain, any letter case."""
        record = Record(left="postmaster", right="alice")
        self.assertEqual(record.match("PostMaster@Company.com", MAIN), "alice")
        self.assertIsNone(record.match("postmaster@other.dom", MAIN))
