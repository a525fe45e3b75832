"""The routing service over a store (cgtwist.core.routing) and the ``router`` CLI group."""

from __future__ import annotations

import io
import os
from typing import Any, Optional

from twisted.internet import defer
from twisted.trial import unittest

from cgtwist import cli, config
from cgtwist.core.routing import Routing, route_error
from cgtwist.errors import InvalidName, MailError
from cgtwist.router import Group
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Account, Route
from tests.storage.dbcase import DatabaseCase

MAIN = "company.com"


class FakeStore:
    """In-memory IAccountStore subset the Router uses; ``alias.dom`` is a domain alias."""

    main_domain = MAIN

    def __init__(self) -> None:
        self.domains = {
            "company.com": "company.com",
            "other.dom": "other.dom",
            "alias.dom": "other.dom",
        }
        self.accounts = {"alice@company.com", "bob@company.com", "carol@other.dom"}
        self.aliases = {
            "al@company.com": "alice@company.com",
            "a1@company.com": "a2@company.com",
            "a2@company.com": "carol@alias.dom",
            "away@company.com": "friend@far.dom",
            "boss@company.com": "al@company.com",
        }
        self.groups: dict[str, Group] = {
            "fwd@company.com": Group("forwarder", ("friend@far.dom",)),
            "team@company.com": Group("group", ("alice@company.com", "bob@company.com")),
        }
        self.settings: dict[str, Any] = {}
        self.broken = False
        self.queries: list[str] = []

    def _domain(self, name: str) -> Optional[str]:
        if self.broken:
            raise RuntimeError("database is locked")
        return self.domains.get(name.lower())

    def is_local_domain(self, name: str) -> defer.Deferred[bool]:
        self.queries.append(f"domain {name}")
        return defer.maybeDeferred(lambda: self._domain(name) is not None)

    def get_account(self, name: str, domain: str) -> defer.Deferred[Optional[Account]]:
        self.queries.append(f"account {name}@{domain}")
        if " " in name:
            return defer.fail(InvalidName(name))
        d = self._domain(domain)
        key = f"{name.lower()}@{d}"
        return defer.succeed(Account(name.lower(), d or "") if key in self.accounts else None)

    def resolve_alias(self, name: str, domain: str) -> defer.Deferred[Optional[str]]:
        self.queries.append(f"alias {name}@{domain}")
        return defer.succeed(self.aliases.get(f"{name.lower()}@{self._domain(domain)}"))

    def resolve_group(self, name: str, domain: str) -> defer.Deferred[Optional[Group]]:
        self.queries.append(f"group {name}@{domain}")
        return defer.succeed(self.groups.get(f"{name.lower()}@{self._domain(domain)}"))

    def get_settings(self) -> defer.Deferred[dict[str, Any]]:
        return defer.succeed(dict(self.settings))

    def set_setting(self, key: str, value: Any) -> defer.Deferred[None]:
        self.settings[key] = value
        return defer.succeed(None)


def make(table: str = "", **overrides: Any) -> tuple[Routing, FakeStore, SettingsHolder]:
    store = FakeStore()
    holder = SettingsHolder(Settings(dict(overrides, **{"router.table": table})))
    return Routing(store, holder, MAIN), store, holder


class RoutingTests(unittest.TestCase):
    """What a sender or a logging-in user notices of routing against the store."""

    def route(self, routing: Routing, address: str, kind: str = "mail") -> Route:
        route: Route = self.successResultOf(routing.route(address, kind))
        return route

    def test_local_account(self) -> None:
        """Mail to an existing account goes to its LOCAL queue, whatever the letter case."""
        routing, _store, _h = make()
        self.assertEqual(
            self.route(routing, "Alice@COMPANY.com"),
            Route("LOCAL", "alice@company.com", "alice@company.com"),
        )
        self.assertEqual(
            str(self.route(routing, "alice")), "LOCAL(alice@company.com)alice@company.com"
        )

    def test_domain_alias(self) -> None:
        """An account reached through a domain alias is delivered under its real domain."""
        routing, _store, _h = make()
        self.assertEqual(
            str(self.route(routing, "carol@alias.dom")), "LOCAL(carol@other.dom)carol@other.dom"
        )

    def test_alias_chains(self) -> None:
        """Aliases are followed, alias after alias, to the account at the end."""
        routing, _store, _h = make()
        self.assertEqual(self.route(routing, "al@company.com").queue, "alice@company.com")
        self.assertEqual(self.route(routing, "boss@company.com").queue, "alice@company.com")
        self.assertEqual(self.route(routing, "a1@company.com").queue, "carol@other.dom")

    def test_alias_off_site_is_not_relay(self) -> None:
        """An alias that forwards off-site gives an SMTP route without the relay mark."""
        routing, _store, _h = make()
        self.assertEqual(
            self.route(routing, "away@company.com"),
            Route("SMTP", "far.dom", "friend@far.dom", relay=False),
        )

    def test_unknown_user_is_a_route_not_an_exception(self) -> None:
        """An unknown local user gives an ERROR route with 5.1.1, which replies 550."""
        routing, _store, _h = make()
        route = self.route(routing, "nobody@company.com")
        self.assertEqual((route.module, route.error), ("ERROR", "5.1.1 unknown user"))
        self.assertEqual(route_error(route).reply(), "550 5.1.1 unknown user")
        self.assertEqual(self.route(routing, '"a b"@company.com').module, "ERROR")

    def test_forwarders_relay_and_groups_route_to_group(self) -> None:
        """A Forwarder to one address routes on to it, marked to relay whoever sends (the
        name is ours); a Group is the GROUP module; neither is a login name."""
        routing, _store, _h = make()
        self.assertEqual(
            self.route(routing, "fwd@company.com"),
            Route("SMTP", "far.dom", "friend@far.dom", relay=True),
        )
        self.assertEqual(
            self.route(routing, "team@company.com"),
            Route("GROUP", "team@company.com", "team@company.com"),
        )
        self.assertEqual(self.route(routing, "team@company.com", "access").module, "ERROR")

    def test_non_local(self) -> None:
        """Mail for another domain goes to that domain's SMTP queue, unmarked."""
        routing, store, _h = make()
        self.assertEqual(
            self.route(routing, "joe@Far.Dom"), Route("SMTP", "far.dom", "joe@far.dom")
        )
        self.assertEqual(store.queries, ["domain far.dom"])

    def test_kept_facts_route_as_the_store_answers(self) -> None:
        """An address whose facts are all kept (another of the same burst asked the store
        for them) is routed without a store question to the very route the store's answers
        give, rules, relaying, errors and loops alike."""
        table = (
            "Relay:<report-*@company.com> = *@partner.com\n"
            "NoRelay:<*@gone.dom> = *@far.dom\n"
            "<l1@company.com> = l2@company.com\n<l2@company.com> = l1@company.com\n"
        )
        addresses = [
            "Alice@COMPANY.com",
            "carol@alias.dom",
            "boss@company.com",
            "fwd@company.com",
            "team@company.com",
            "joe@far.dom",
            "report-x@company.com",
            "bob@gone.dom",
            "l1@company.com",
            "nobody@company.com",
            "carol%other.dom@company.com",
            "staff@[192.0.2.1]",
        ]
        cold, _store, _h = make(table)
        expected = [self.route(cold, a) for a in addresses]
        warm, store, _h = make(table)
        for a in addresses:
            self.route(warm, a)
        asked = list(store.queries)
        warm._routes.clear()  # the routes, not the facts: each address is resolved again
        self.assertEqual([self.route(warm, a) for a in addresses], expected)
        self.assertEqual(store.queries, asked)

    def test_relay_record(self) -> None:
        """A Relay: record marks the route so it is relayed from any source; plain records do not."""
        routing, _store, _h = make(
            "Relay:<report-*@company.com> = *@partner.com\n<fwd-*@company.com> = *@partner.com\n"
        )
        self.assertEqual(
            self.route(routing, "report-x@company.com"),
            Route("SMTP", "partner.com", "x@partner.com", relay=True),
        )
        self.assertEqual(
            self.route(routing, "fwd-x@company.com"),
            Route("SMTP", "partner.com", "x@partner.com", relay=False),
        )

    def test_norelay_record(self) -> None:
        """A NoRelay: record applies when it leads to a local account and is skipped otherwise."""
        routing, _store, _h = make(
            "NoRelay:<*@old.dom> = *@company.com\nNoRelay:<*@gone.dom> = *@far.dom\n"
        )
        self.assertEqual(self.route(routing, "bob@old.dom").queue, "bob@company.com")
        self.assertEqual(str(self.route(routing, "bob@gone.dom")), "SMTP(gone.dom)bob@gone.dom")

    def test_access_records_and_aliases_for_login(self) -> None:
        """Login names use Access: records and aliases; Mail: records and remote targets do not log in."""
        routing, _store, _h = make("Access:<staff-*> = *\nMail:<postmaster> = bob\n")
        self.assertEqual(self.route(routing, "staff-alice", "access").queue, "alice@company.com")
        self.assertEqual(self.route(routing, "staff-alice", "mail").module, "ERROR")
        self.assertEqual(self.route(routing, "al", "access").queue, "alice@company.com")
        self.assertEqual(self.route(routing, "carol%other.dom", "access").queue, "carol@other.dom")
        self.assertEqual(self.route(routing, "away@company.com", "access").module, "ERROR")
        self.assertEqual(self.route(routing, "postmaster", "access").module, "ERROR")
        self.assertEqual(self.route(routing, "postmaster", "mail").queue, "bob@company.com")

    def test_main_domain_restart(self) -> None:
        """user%other.dom@company.com routes as user@other.dom."""
        routing, _store, _h = make()
        self.assertEqual(
            self.route(routing, "carol%other.dom@company.com").queue, "carol@other.dom"
        )
        self.assertEqual(
            self.route(routing, "x%far.dom@company.com"), Route("SMTP", "far.dom", "x@far.dom")
        )

    def test_loop_gives_5_4_6_and_554(self) -> None:
        """A routing loop ends in ERROR 5.4.6, answered 554, instead of hanging."""
        routing, _store, _h = make(
            "<l1@company.com> = l2@company.com\n<l2@company.com> = l1@company.com\n"
        )
        route = self.route(routing, "l1@company.com")
        self.assertEqual(route.error, "5.4.6 routing loop detected")
        self.assertEqual(route_error(route).code, 554)

    def test_max_hops_setting(self) -> None:
        """router.max_hops set by the administrator overrides the built-in limit of 10."""
        chain = "<c1@company.com> = c2@company.com\n<c2@company.com> = c3@company.com\n<c3@company.com> = bob\n"
        routing, _store, _h = make(chain)
        self.assertEqual(self.route(routing, "c1@company.com").module, "LOCAL")
        routing, _store, _h = make(chain, **{"router.max_hops": 2})
        self.assertEqual(self.route(routing, "c1@company.com").error, "5.4.6 routing loop detected")

    def test_table_change_applies_at_once(self) -> None:
        """A new table in the settings is used for the very next address, without a restart."""
        routing, _store, holder = make()
        self.assertEqual(self.route(routing, "x@old.dom").module, "SMTP")
        holder.replace(Settings({"router.table": "<*@old.dom> = bob\n"}))
        self.assertEqual(self.route(routing, "x@old.dom").queue, "bob@company.com")

    def test_bad_stored_table_fails_temporarily(self) -> None:
        """A table that does not parse never routes mail wrongly: every address gets 451 4.3.5."""
        routing, _store, _h = make("<a> = \n")
        failure = self.failureResultOf(routing.route("alice@company.com"), MailError)
        self.assertEqual((failure.value.code, failure.value.enhanced), (451, "4.3.5"))
        self.assertIn("line 1", failure.value.detail)

    def test_store_failure_is_temporary(self) -> None:
        """A store error becomes 451 4.3.0 (sender retries) and is logged with its traceback."""
        routing, store, _h = make()
        store.broken = True
        failure = self.failureResultOf(routing.route("alice@company.com"), MailError)
        self.assertEqual(failure.value.code, 451)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_explain(self) -> None:
        """explain() gives the steps: matched record, alias hop, final route."""
        routing, _store, _h = make("<*@old.dom> = al@company.com\n")
        result = self.successResultOf(routing.explain("x@old.dom"))
        self.assertEqual([s.action for s in result.steps], ["record", "alias", "route"])
        self.assertEqual(result.route.queue, "alice@company.com")

    def test_route_error_mapping(self) -> None:
        """ERROR routes turn into the reply a client sees: 5.x.x -> 550, 4.x.x -> 451."""
        self.assertEqual(
            route_error(Route("ERROR", "", "a", error="5.7.1 go away")).reply(), "550 5.7.1 go away"
        )
        self.assertEqual(
            route_error(Route("ERROR", "", "a", error="4.2.1 later")).reply(), "451 4.2.1 later"
        )
        self.assertEqual(
            route_error(Route("ERROR", "", "a", error="nope")).reply(), "550 5.1.1 nope"
        )


class RealStoreTests(DatabaseCase):
    """The same routing against the real SQLite store, so the seam is proven, not assumed."""

    def test_routing_over_sqlite(self) -> None:
        """Accounts, aliases, domain aliases and unknown users route as with the fake store."""

        async def go() -> None:
            store = await self.open_store(MAIN)
            await store.add_domain(MAIN)
            await store.add_domain("other.dom")
            await store.add_domain_alias("alias.dom", "other.dom")
            await store.add_account("alice", MAIN, "pw-alice-1234")
            await store.add_account("carol", "other.dom", "pw-carol-1234")
            await store.add_alias("al", MAIN, "carol@alias.dom")
            await store.set_setting("router.table", "<*@old.dom> = al\n")
            holder = SettingsHolder(Settings(await store.get_settings()))
            routing = Routing(store, holder, MAIN)
            got = [
                str(await routing.route(a))
                for a in (
                    "Alice@company.com",
                    "carol@alias.dom",
                    "x@old.dom",
                    "nobody@company.com",
                    "joe@far.dom",
                    "bad/name@company.com",
                )
            ]
            self.assertEqual(
                got,
                [
                    "LOCAL(alice@company.com)alice@company.com",
                    "LOCAL(carol@other.dom)carol@other.dom",
                    "LOCAL(carol@other.dom)carol@other.dom",
                    "ERROR()nobody@company.com",
                    "SMTP(far.dom)joe@far.dom",
                    "ERROR()bad/name@company.com",
                ],
            )
            self.assertEqual((await routing.route("al", "access")).queue, "carol@other.dom")

        return defer.ensureDeferred(go())  # type: ignore[return-value]


class RecordingContext(cli.Context):
    notified: list[tuple[str, dict[str, Any]]]

    def notify(self, cmd: str, **args: Any) -> Optional[dict[str, Any]]:
        self.notified.append((cmd, args))
        return {"ok": True}


class RouterCLITests(unittest.TestCase):
    """``cgtwist-admin router show|set|test`` as an administrator uses them."""

    def setUp(self) -> None:
        self.store = FakeStore()
        cfg = config.parse(
            '[server]\nmain_domain = "company.com"\nhostname = "mx.company.com"\n',
            overrides={"base_dir": self.mktemp()},
        )
        self.ctx = RecordingContext(
            config=cfg,
            store=self.store,
            reactor=None,  # type: ignore[arg-type]
            out=io.StringIO(),
            err=io.StringIO(),
        )
        self.ctx.notified = []
        self.parser = cli.build_parser()

    def run_cli(self, *argv: str) -> Any:
        """The handler, then the reloads its changes call for, as ``cli.run`` does."""
        args = self.parser.parse_args(["router", *argv])
        result = self.successResultOf(defer.ensureDeferred(args.handler(self.ctx, args)))
        self.ctx.tell_server()
        return result

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_set_stores_and_notifies(self) -> None:
        """router set stores the file's text verbatim and tells the server to reload."""
        text = "; our table\n<*@old.dom> = *@company.com\n"
        self.run_cli("set", self.write(text))
        self.assertEqual(self.store.settings["router.table"], text)
        (notified,) = self.ctx.notified
        self.assertEqual(notified[0], "reload")
        self.assertEqual(notified[1]["what"], "router")
        self.assertEqual(notified[1]["changes"], ["Router table set: 1 record(s)"])
        self.assertIn("1 record", self.ctx.out.getvalue())
        self.assertEqual(self.ctx.err.getvalue(), "")

    def test_set_warns_about_relay_records(self) -> None:
        """Relay: and RelayAll: records are stored but each draws a 'dangerous' warning."""
        path = self.write(
            "<a> = b\nRelay:<x@company.com> = y@far.dom\nRelayAll:<z@company.com> = y@far.dom\n"
        )
        self.run_cli("set", path)
        warnings = self.ctx.err.getvalue().splitlines()
        self.assertEqual(len(warnings), 2)
        self.assertIn(
            f"{path}:2: Relay: record is dangerous: relays regardless of source", warnings[0]
        )
        self.assertIn(f"{path}:3: RelayAll:", warnings[1])
        self.assertIn("router.table", self.store.settings)

    def test_set_refuses_bad_table_with_line_number(self) -> None:
        """A bad table is refused naming file and line, and the stored table is left alone."""
        self.store.settings["router.table"] = "<old> = bob\n"
        path = self.write("<a> = b\n\nBogus:<c> = d\n")
        args = self.parser.parse_args(["router", "set", path])
        failure = self.failureResultOf(
            defer.ensureDeferred(args.handler(self.ctx, args)), cli.CLIError
        )
        self.assertEqual(
            str(failure.value),
            f"{path}:3: unknown prefix Bogus: (want Relay:, RelayAll:, NoRelay:, Mail:, Access:, Signal:)",
        )
        self.assertEqual(self.store.settings["router.table"], "<old> = bob\n")
        self.assertEqual(self.ctx.notified, [])

    def test_set_missing_file(self) -> None:
        """A file that cannot be read is a one-line error."""
        args = self.parser.parse_args(["router", "set", os.path.join(self.mktemp(), "nope")])
        failure = self.failureResultOf(
            defer.ensureDeferred(args.handler(self.ctx, args)), cli.CLIError
        )
        self.assertIn("cannot read", str(failure.value))

    def test_show(self) -> None:
        """router show prints the stored table with its comments; an empty one says so."""
        self.run_cli("show")
        self.assertIn("empty", self.ctx.err.getvalue())
        self.store.settings["router.table"] = "; c\n<a> = b"
        self.run_cli("show")
        self.assertEqual(self.ctx.out.getvalue(), "; c\n<a> = b\n")

    def test_test_prints_records_hops_and_route(self) -> None:
        """router test prints each matched record, each hop and the final module(queue)address."""
        self.store.settings["router.table"] = "<*@old.dom> = al@company.com ; moved\n"
        self.run_cli("test", "Joe@old.dom")
        out = self.ctx.out.getvalue().splitlines()
        self.assertEqual(
            out,
            [
                "routing Joe@old.dom (mail)",
                "  line 1: <*@old.dom> = al@company.com ; moved: Joe@old.dom -> al@company.com",
                "  alias: al@company.com -> alice@company.com",
                "  route: alice@company.com -> LOCAL(alice@company.com)alice@company.com",
                "LOCAL(alice@company.com)alice@company.com",
            ],
        )

    def test_test_names_a_forwarder_as_why_it_relays(self) -> None:
        """router test of a forwarder to an outside address says the route relays because the
        name is a forwarder, not a Relay: record the administrator never wrote."""
        self.run_cli("test", "fwd@company.com")
        self.assertEqual(
            self.ctx.out.getvalue().splitlines()[-1],
            "SMTP(far.dom)friend@far.dom  [relay: a forwarder's route relays every sender]",
        )

    def test_test_access_and_trial_table(self) -> None:
        """--access routes a login name; --table tries a table file before it is stored."""
        path = self.write("Relay:Access:<staff-*> = *@far.dom\n")
        self.run_cli("test", "--access", "--table", path, "staff-x")
        out = self.ctx.out.getvalue()
        self.assertIn("line 1: Relay:Access:<staff-*>", out)
        self.assertIn("5.7.8 not a local account", out.splitlines()[-1])
        self.assertNotIn("router.table", self.store.settings)
        self.ctx.out = io.StringIO()
        self.run_cli(
            "test",
            "report@company.com",
            "--table",
            self.write("Relay:<report@company.com> = x@far.dom\n"),
        )
        self.assertEqual(
            self.ctx.out.getvalue().splitlines()[-1],
            "SMTP(far.dom)x@far.dom  [relay: a Relay: record matched]",
        )
