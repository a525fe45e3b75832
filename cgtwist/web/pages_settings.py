"""WebAdmin's Settings -> Mail -> SMTP pages (Receiving, Relaying, Delivery), built from the
typed settings catalogue: each field with the catalogue's description, every value checked
as ``cgtwist-admin settings set`` checks it, errors shown on their field and nothing saved
until all are right.

Owns which settings each page shows and in which groups, and the save: only the values that
changed are set, each through ``Admin.set_setting`` as the session's account (so each change
is logged with who made it and the server reloads its settings at once). It must not know a
setting's type rules (cgtwist.web.settings_form, cgtwist.settings) or talk to the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cgtwist import settings as dynamic
from cgtwist.web import settings_form
from cgtwist.web.render import Reply, redirect
from cgtwist.web.site import Req, Route


@dataclass(frozen=True)
class Page:
    title: str
    hint: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]  # (group title, setting keys)


PAGES: dict[str, Page] = {
    "receiving": Page(
        "Receiving",
        "How SMTP takes mail in: limits on connections, commands and messages, and the checks "
        "made on each sender (CommuniGate's SMTP Receiving).",
        (
            (
                "Limits",
                (
                    "smtp.max_message_size",
                    "smtp.max_recipients",
                    "smtp.max_connections",
                    "smtp.max_connections_per_ip",
                    "smtp.max_errors",
                    "smtp.max_received_headers",
                    "smtp.max_command_length",
                    "smtp.max_data_line_length",
                ),
            ),
            (
                "Time limits",
                (
                    "smtp.idle_timeout",
                    "smtp.data_timeout",
                    "smtp.command_deadline",
                    "smtp.data_deadline",
                    "smtp.data_min_rate",
                    "smtp.session_deadline",
                    "smtp.tls_handshake_timeout",
                    "smtp.greeting_delay",
                ),
            ),
            ("Return-path", ("protection.returnpath.mode",)),
            (
                "Reverse Connect (sender verification)",
                (
                    "protection.reverse_connect.mode",
                    "protection.reverse_connect.timeout",
                    "protection.reverse_connect.fail_open",
                    "protection.reverse_connect.positive_ttl",
                    "protection.reverse_connect.negative_ttl",
                    "protection.reverse_connect.rate_limit",
                    "protection.reverse_connect.max_concurrency",
                ),
            ),
            (
                "SPF",
                ("protection.spf.mode", "protection.spf.actions", "protection.spf.timeout"),
            ),
            (
                "RBLs",
                ("protection.rbl.mode", "protection.rbl.zones", "protection.rbl.code"),
            ),
            (
                "Blacklisting",
                (
                    "protection.blacklist.mode",
                    "protection.blacklist.senders",
                    "protection.autoblacklist.threshold",
                    "protection.autoblacklist.window",
                    "protection.autoblacklist.duration",
                ),
            ),
            ("Per listener", ("protection.listeners",)),
        ),
    ),
    "relaying": Page(
        "Relaying",
        "Who may send mail on to other servers: Client IPs (Settings / Network) and "
        "authenticated accounts relay; the Router's Relay: records relay for named "
        "destinations. Here: what an authenticated sender may claim to be.",
        (
            (
                "Authenticated senders",
                ("smtp.restrict_sender", "smtp.check_from_header", "smtp.send_as"),
            ),
            ("Passwords", ("auth.allow_plaintext",)),
            ("Routing", ("router.max_hops",)),
        ),
    ),
    "delivery": Page(
        "Delivery",
        "How mail leaves: the smarthost or MX delivery, TLS, time limits and how many "
        "deliveries run at once, retries and reports (CommuniGate's SMTP Delivery and Queue).",
        (
            (
                "Relay host",
                (
                    "smtp.relayhost",
                    "smtp.relayhost_auth",
                    "smtp.relayhost_ca_file",
                    "smtp.opportunistic_tls",
                    "smtp.remote_port",
                    "smtp.max_addresses",
                    "smtp.connection_reuse_time",
                ),
            ),
            (
                "Time limits",
                (
                    "smtp.timeout_connect",
                    "smtp.timeout_greeting",
                    "smtp.timeout_command",
                    "smtp.timeout_mail",
                    "smtp.timeout_rcpt",
                    "smtp.timeout_data_init",
                    "smtp.timeout_data_block",
                    "smtp.timeout_data_end",
                ),
            ),
            (
                "Concurrency",
                (
                    "queue.smtp_concurrency",
                    "queue.destination_concurrency",
                    "queue.suspend_after",
                ),
            ),
            (
                "Retries and reports",
                (
                    "queue.retry_schedule",
                    "queue.max_lifetime",
                    "queue.delay_warning",
                    "dsn.max_full_size",
                ),
            ),
        ),
    ),
}


# Every setting's (value, whether it is the default) on this node.
Current = dict[str, tuple[object, bool]]


def _page_of(name: str) -> Page:
    page = PAGES.get(name)
    if page is None:
        raise settings_form.FieldError(f"no settings page {name!r}")
    return page


def _keys(page: Page) -> list[str]:
    return [key for _title, keys in page.groups for key in keys]


def _render(
    req: Req,
    name: str,
    current: Current,
    texts: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> Reply:
    page = _page_of(name)
    groups = []
    for title, keys in page.groups:
        fields = []
        for key in keys:
            spec = dynamic.SPECS[key]
            value, default = current[key]
            fields.append(
                settings_form.field_of(
                    spec, value, default, text=texts.get(key), error=errors.get(key, "")
                )
            )
        groups.append((title, fields))
    return req.page(
        "settings_smtp.html",
        status=status,
        name=name,
        page=page,
        pages=[(n, p.title) for n, p in PAGES.items()],
        groups=groups,
        errors=errors,
        modes=settings_form.MODES,
    )


async def _current(req: Req) -> Current:
    """Every setting's (value, is the default) on this node: one read of the store."""
    return {v.key: (v.value, v.default) for v in await req.panel.admin.server_settings()}


async def smtp_page(req: Req, name: str) -> Reply:
    _page_of(name)
    return _render(req, name, await _current(req), {}, {})


async def smtp_save(req: Req, name: str) -> Reply:
    page = _page_of(name)
    current = await _current(req)
    limit = req.panel.max_text()
    values: dict[str, object] = {}
    errors: dict[str, str] = {}
    for key in _keys(page):
        spec = dynamic.SPECS[key]
        if spec.secret:
            if f"unset__{key}" in req.form:
                values[key] = None
                continue
            if not req.form.get(key, "").strip():
                continue  # empty: keep the secret as it is
        try:
            values[key] = settings_form.parse(spec, req.form, limit)
        except settings_form.FieldError as e:
            errors[key] = str(e)
    if errors:
        texts = {k: req.form.get(k, "") for k in _keys(page) if not dynamic.SPECS[k].secret}
        return _render(req, name, current, texts, errors, status=400)
    admin = req.panel.acting(req.account)
    changed: list[str] = []
    for key, value in values.items():
        if value == current[key][0]:
            continue
        try:
            if value is None and dynamic.SPECS[key].secret:
                await admin.unset_setting(key)
            else:
                await admin.set_setting(key, value)
        except ValueError as e:  # the store's own check (cross-setting rules)
            errors[key] = str(e)
            texts = {k: req.form.get(k, "") for k in _keys(page) if not dynamic.SPECS[k].secret}
            note = f" ({', '.join(changed)} saved before it)" if changed else ""
            errors[key] += note
            return _render(req, name, await _current(req), texts, errors, status=400)
        changed.append(key)
    req.note(f"{page.title} saved: {', '.join(changed)}." if changed else "Nothing changed.")
    return redirect(f"/admin/settings/mail/smtp/{name}")


def routes() -> list[Route]:
    pattern = re.compile(r"/admin/settings/mail/smtp/(?P<name>[a-z]+)")
    return [
        Route("GET", pattern, smtp_page, "server"),
        Route("POST", pattern, smtp_save, "server"),
    ]
