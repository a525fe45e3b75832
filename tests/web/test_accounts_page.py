"""A domain's Accounts page in-process (real socket, real SQLite store): a search over a domain
larger than ``web.account_search_rows`` pages through the domain a window at a time."""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.threads import deferToThread

from tests.web.test_site import PASSWORD, SiteCase

NEXT = re.compile(r'<a href="([^"]*)" rel="next">')


class AccountsSearchTests(SiteCase):
    def add_many(self, count: int) -> Any:
        def txn(cur: Any) -> None:
            did = cur.query_one("SELECT id FROM domains WHERE name = ?", ("example.com",))[0]
            for i in range(count):
                cur.execute(
                    "INSERT INTO accounts (domain_id, name, real_name, created) VALUES (?, ?, ?, 0)",
                    (did, f"u{i:06d}", "Ann Smith" if i == count - 3 else f"User {i}"),
                )

        return self.store.db.run_interaction("add_many", txn)

    async def test_next_searches_on_when_a_window_found_nothing(self) -> None:
        """With 50 accounts looked at per page, a search whose one match is near the end of
        202 accounts shows pages saying which names were searched, each with a Next link
        (even when it found nothing), through the page with the match to the domain's end."""
        client = await self.serve(**{"web.account_search_rows": 50})
        await self.add_many(200)
        r = await deferToThread(client.login, "postmaster", PASSWORD)
        self.assertEqual(r.status, 303)
        path = "/admin/domains/example.com/accounts?q=smith"
        bodies = []
        while path:
            page = await deferToThread(client.get, path.replace("&amp;", "&"))
            self.assertEqual(page.status, 200)
            bodies.append(page.body)
            found = NEXT.search(page.body)
            path = found.group(1) if found else ""
            self.assertLess(len(bodies), 10, "Next never ends")
        self.assertEqual(len(bodies), 5)  # 202 accounts (postmaster, pbx), 50 a page
        self.assertIn("among pbx to u000047", bodies[0])
        self.assertIn("among u000198 to u000199", bodies[-1])
        self.assertEqual([">u000197</a>" in b for b in bodies], [False, False, False, True, False])
        self.assertIn("Ann Smith", bodies[3])
