"""The HTTP edge of the web panel: requests in, replies out, with every rule that applies to
all pages.

Owns what no page may forget: plain HTTP answering only a redirect to HTTPS (except for
Client IPs), the request body limit, the session cookie (``HttpOnly``, ``SameSite=Strict``,
``Secure`` and the ``__Host-`` prefix on HTTPS), the CSRF token of every POST, the security
headers (Content-Security-Policy with ``frame-ancestors 'none'``, X-Frame-Options,
``Cache-Control: no-store``), the rights a route needs, and an unexpected error becoming a
500 page and a log line with its traceback. The pages themselves are in cgtwist.web.pages_*.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional

from twisted.internet import defer
from twisted.protocols import policies
from twisted.web import server
from twisted.web.resource import Resource

from cgtwist.admin import user_message
from cgtwist.errors import StoreUnavailable
from cgtwist.logs import Logger
from cgtwist.types import ListenerSpec
from cgtwist.web.forms import FormError
from cgtwist.web.render import Reply, redirect
from cgtwist.web.sessions import Session

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IProtocolFactory
    from twisted.web import http

    from cgtwist.web.panel import WebPanel

    # twisted.web and policies leave the methods extended below unannotated, and mypy
    # --strict refuses an untyped call (each super() call here). For the type checker only,
    # these are the base classes with the signatures this module relies on, as Twisted
    # documents them; at run time each name *is* the Twisted class (the else branch).
    class _Request(server.Request):
        def gotLength(self, length: Optional[int]) -> None: ...
        def handleContentChunk(self, data: bytes) -> None: ...
        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None: ...

    class _Site(server.Site):
        def __init__(self, resource: Resource) -> None: ...
        def buildProtocol(
            self, addr: Optional[IAddress]
        ) -> Optional[http._GenericHTTPChannelProtocol]: ...

    class _WrappingFactory(policies.WrappingFactory):
        def __init__(self, wrappedFactory: IProtocolFactory) -> None: ...
        def unregisterProtocol(self, p: policies.ProtocolWrapper) -> None: ...

    class _Resource(Resource):
        def __init__(self) -> None: ...

else:
    _Request = server.Request
    _Site = server.Site
    _WrappingFactory = policies.WrappingFactory
    _Resource = Resource

log = Logger(namespace="cgtwist.web")

# Nothing but our own stylesheet: no scripts at all, no framing, forms post only to us.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
LOGIN_COOKIE = "cgtwist_login"


def session_cookie(secure: bool) -> str:
    """On HTTPS the ``__Host-`` prefix: the browser keeps it only with Secure, Path=/ and no
    Domain, so no other host or plain-HTTP page can plant or read it."""
    return "__Host-cgtwist_session" if secure else "cgtwist_session"


class Forbidden(Exception):
    """The session's account may not see this page or act on this object."""

    def __init__(self, why: str, account: str = "") -> None:
        super().__init__(why)
        self.account = account


@dataclass
class Req:
    """One request as a page handler sees it: decoded text, the session, helpers."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    peer: str
    secure: bool
    host: str
    session: Optional[Session]
    panel: WebPanel
    cookies: dict[str, str] = field(default_factory=dict)
    authorization: str = ""  # the Authorization header (/metrics' bearer token)

    @property
    def account(self) -> str:
        assert self.session is not None
        return self.session.account

    def note(self, text: str) -> None:
        """A message shown once on the next page (after a redirect)."""
        if self.session is not None:
            self.session.notes.append(text)

    def require_domain(self, domain: str) -> None:
        if self.session is None or not self.session.rights.may_admin(domain):
            raise Forbidden(
                f"You do not administer {domain}.", self.session.account if self.session else ""
            )

    def page(self, template: str, /, status: int = 200, **values: Any) -> Reply:
        session = self.session
        notes = list(session.notes) if session else []
        if session:
            session.notes.clear()
        return self.panel.templates.page(
            template,
            status=status,
            session=session,
            csrf=session.csrf if session else "",
            notes=notes,
            path=self.path,
            **values,
        )


Handler = Callable[..., Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    access: str  # "public", "user", "admin" (any administrator), "server" (server admin)
    csrf: bool = True  # POST needs the session's token ("public" login checks its own)


class LimitedRequest(_Request):
    """A request whose body is kept up to the site's limit; more marks it ``too_large``
    (answered 413) and the rest is dropped, so a huge POST cannot fill memory or disk."""

    too_large = False
    _size = 0

    def _limit(self) -> int:
        site = getattr(self.channel, "site", None)
        return int(site.body_limit()) if site is not None else 1 << 20

    def gotLength(self, length: Optional[int]) -> None:
        if length is not None and length > self._limit():
            self.too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._size += len(data)
        if self._size > self._limit():
            self.too_large = True
            self._empty()
            return
        super().handleContentChunk(data)

    def _empty(self) -> None:
        if self.content is not None:
            self.content.seek(0)
            self.content.truncate()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.too_large:  # no form parsing of a cut body
            self._empty()
        super().requestReceived(command, path, version)


class WebSite(_Site):
    """One ``http`` listener's factory: the panel's resource, our request class, and the
    idle timeout from the settings at each connection."""

    requestFactory = LimitedRequest
    noisy = False

    def __init__(self, panel: WebPanel, spec: ListenerSpec) -> None:
        super().__init__(WebResource(panel, spec))
        self.panel = panel
        self.spec = spec
        self.displayTracebacks = False

    def body_limit(self) -> int:
        return self.panel.body_limit()

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN: HTTP/1.1 only, the protocol whose request limits this module enforces (Site
        would offer h2 too when the h2 package happens to be installed)."""
        return [b"http/1.1"]

    def buildProtocol(self, addr: Optional[IAddress]) -> Optional[http._GenericHTTPChannelProtocol]:
        channel = super().buildProtocol(addr)
        if channel is not None:
            channel.timeOut = self.panel.connection_timeout()
        return channel

    def log(self, request: Any) -> None:
        """No access log through the legacy logger: page actions log themselves."""


class _Counted(policies.ProtocolWrapper):
    """A connection counted against its address (PeerLimit)."""

    peer_ip: Optional[str] = None


class PeerLimit(_WrappingFactory):
    """At most ``web.max_connections_per_ip`` open connections per address (Client IPs
    exempt), counted across every http listener of the panel; one more is closed at once and
    logged. Keeps one host from holding every connection slot with idle keep-alives."""

    noisy = False
    protocol = _Counted

    def __init__(self, site: WebSite) -> None:
        super().__init__(site)
        self.panel = site.panel

    def buildProtocol(self, addr: Any) -> Any:
        ip = str(getattr(addr, "host", "") or "")
        panel = self.panel
        count = panel.open_connections.get(ip, 0)
        limit = panel.connections_per_ip()
        if limit and count >= limit and not panel.is_client_ip(ip):
            log.info(
                "web: connection from {ip} refused: {n} already open (web.max_connections_per_ip)",
                ip=ip,
                n=count,
            )
            return None
        wrapper: Any = super().buildProtocol(addr)
        if wrapper is not None:
            panel.open_connections[ip] = count + 1
            wrapper.peer_ip = ip
            if panel.stats is not None:
                panel.stats.connection("http")
        return wrapper

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        ip = getattr(p, "peer_ip", None)
        if ip is None:
            return
        left = self.panel.open_connections.get(ip, 1) - 1
        if left > 0:
            self.panel.open_connections[ip] = left
        else:
            self.panel.open_connections.pop(ip, None)


def _text(value: bytes) -> str:
    return value.decode("utf-8")


def _decode_args(args: dict[bytes, list[bytes]]) -> dict[str, str]:
    return {_text(k): _text(v[0]) for k, v in args.items() if v}


class WebResource(_Resource):
    """Every path of one listener: dispatch to the panel's routes under the common rules."""

    isLeaf = True

    def __init__(self, panel: WebPanel, spec: ListenerSpec) -> None:
        super().__init__()
        self.panel = panel
        self.spec = spec

    def render(self, request: Any) -> Any:
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))
        d = defer.ensureDeferred(self._answer(request))
        d.addCallback(lambda reply: None if finished else self._write(request, reply))
        d.addErrback(lambda f: log.failure("web: writing the reply failed", f))
        return server.NOT_DONE_YET

    async def _answer(self, request: Any) -> Reply:
        panel = self.panel
        peer = str(getattr(request.getClientAddress(), "host", "") or "")
        secure = self.spec.tls == "implicit"
        try:
            return await self._dispatch(request, peer, secure)
        except Forbidden as e:
            log.info(
                "web: {path} refused to {who} from {peer}: {why}",
                path=request.path.decode("latin-1")[:200],
                who=getattr(e, "account", "") or "-",
                peer=peer,
                why=str(e),
            )
            return _error(panel, 403, str(e))
        except StoreUnavailable as e:  # the store logged why; no traceback for an outage
            log.warn("web: database unavailable for {peer}: {err}", peer=peer, err=str(e))
            return _error(panel, 503, "The database is unavailable; try again in a minute.")
        except Exception:
            log.failure(
                "web: {method} {path} from {peer} failed",
                method=request.method.decode("latin-1"),
                path=request.path.decode("latin-1")[:200],
                peer=peer,
            )
            return _error(panel, 500, "Internal error; the server log has the details.")

    def _plain_http_redirect(self, request: Any, host: str) -> Reply:
        port = self.panel.https_port()
        if port is None:
            return _error(
                self.panel,
                403,
                "This server answers plain HTTP only to its Client IPs and has no HTTPS "
                "listener configured.",
            )
        target = f"https://{host}" + ("" if port == 443 else f":{port}")
        return Reply(status=301, location=target + (request.uri.decode("latin-1") or "/"))

    async def _dispatch(self, request: Any, peer: str, secure: bool) -> Reply:
        panel = self.panel
        host = _host(request, panel.hostname)
        if not secure and not panel.is_client_ip(peer):
            return self._plain_http_redirect(request, host)
        if getattr(request, "too_large", False):
            return _error(panel, 413, f"The form is larger than {panel.body_limit()} octets.")
        try:
            method = _text(request.method)
            path = urllib.parse.unquote(_text(request.path), errors="strict")
            query = _decode_args(
                urllib.parse.parse_qs(
                    urllib.parse.urlsplit(request.uri).query, keep_blank_values=True
                )
            )
            form = _decode_args(request.args) if method == "POST" else {}
            cookies = {_text(k): _text(v) for k, v in _cookies(request.requestHeaders).items()}
            authorization = _text(request.getHeader(b"authorization") or b"")[:1000]
        except UnicodeDecodeError:
            return _error(panel, 400, "The request is not valid UTF-8.")
        if path.startswith("/static/") and method in ("GET", "HEAD"):
            return panel.static(path[len("/static/") :])
        session = await panel.session(cookies.get(session_cookie(secure), ""))
        req = Req(
            method, path, query, form, peer, secure, host, session, panel, cookies, authorization
        )
        for route in panel.routes:
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            if route.method != method and not (route.method == "GET" and method == "HEAD"):
                continue
            return await self._run(req, route, match.groupdict())
        if any(r.pattern.fullmatch(path) for r in panel.routes):
            return _error(panel, 405, f"{method} is not allowed here.")
        return _error(panel, 404, "No such page.")

    async def _run(self, req: Req, route: Route, args: dict[str, str]) -> Reply:
        panel, session = req.panel, req.session
        if route.access != "public":
            if session is None:
                target = urllib.parse.quote(req.path, safe="/")
                return redirect(f"/login?next={target}")
            if route.access == "admin" and not session.rights.any_admin:
                raise Forbidden(
                    "WebAdmin is for administrators; your account has WebUser only.",
                    session.account,
                )
            if route.access == "server" and not session.rights.server_admin:
                raise Forbidden("This page is for server administrators.", session.account)
            if (
                req.method == "POST"
                and route.csrf
                and not session.csrf_ok(req.form.get("csrf", ""))
            ):
                log.warn(
                    "web: POST {path} by {account} from {peer} without a valid CSRF token; refused",
                    path=req.path[:200],
                    account=session.account,
                    peer=req.peer,
                )
                return _error(panel, 403, "The form is stale or forged; reload the page and retry.")
        try:
            return await route.handler(req, **args)
        except Forbidden:
            raise
        except FormError as e:
            return _error(panel, 400, str(e), req)
        except Exception as e:
            message = user_message(e)
            if message is None:
                raise
            return _error(panel, 409 if "exist" in message else 400, message, req)

    def _write(self, request: Any, reply: Reply) -> None:
        secure = self.spec.tls == "implicit"
        request.setResponseCode(reply.status)
        request.setHeader("Server", "cgtwist")  # not Twisted's name and version
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        if secure:
            request.setHeader("Strict-Transport-Security", "max-age=31536000")
        for name, value in reply.headers.items():
            request.setHeader(name, value)
        for name, cookie in reply.cookies.items():
            if name == "session":
                name = session_cookie(secure)
            request.addCookie(
                name,
                cookie or "",
                path="/",
                secure=secure or None,
                httpOnly=True,
                sameSite="strict",
                max_age=None if cookie else "0",
            )
        if reply.location is not None:
            request.setHeader("Location", reply.location)
        request.setHeader("Content-Type", reply.content_type)
        request.setHeader("Content-Length", str(len(reply.body)))
        if request.method != b"HEAD":
            request.write(reply.body)
        request.finish()


def _error(panel: WebPanel, status: int, message: str, req: Optional[Req] = None) -> Reply:
    if req is not None:
        return req.page("error.html", status=status, message=message)
    return panel.templates.page(
        "error.html", status=status, session=None, csrf="", notes=[], path="", message=message
    )


_HOST_RE = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^\[[0-9A-Fa-f:.]{2,45}\]$")


def _host(request: Any, fallback: str) -> str:
    """The host name the browser used, without its port, when it looks like one; else ours
    (a redirect never carries a forged Host header's junk)."""
    raw = (request.getHeader(b"host") or b"").decode("latin-1")
    name = raw[: raw.find("]") + 1] if raw.startswith("[") else raw.split(":", 1)[0]
    return name if _HOST_RE.match(name) else fallback


def _cookies(headers: Any) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for line in headers.getRawHeaders(b"cookie") or ():
        for part in line.split(b";"):
            name, sep, value = part.strip().partition(b"=")
            if sep and name not in out:
                out[name] = value
    return out
