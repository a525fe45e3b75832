"""A plain HTTP client for the web panel's end-to-end tests: cookies, forms, CSRF tokens.

No browser: http.client against the real server, so the tests see exactly the headers,
cookies and status codes the server sends (the browser story is tests/e2e/test_web_browser_e2e.py).
"""

from __future__ import annotations

import html
import http.client
import re
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Optional

CSRF_RE = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    def csrf(self) -> str:
        m = CSRF_RE.search(self.body)
        assert m, f"no csrf field in the page: {self.body[:500]}"
        return html.unescape(m.group(1))

    def set_cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


class WebClient:
    """One browser-like user agent: keeps cookies, one connection per request."""

    def __init__(self, port: int, secure: bool = True, host: str = "127.0.0.1") -> None:
        self.port = port
        self.secure = secure
        self.host = host
        self.cookies: dict[str, str] = {}

    def _connection(self) -> http.client.HTTPConnection:
        if self.secure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # the server's generated self-signed certificate
            return http.client.HTTPSConnection(self.host, self.port, timeout=60, context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(
        self,
        method: str,
        path: str,
        form: Optional[dict[str, str]] = None,
        body: Optional[bytes] = None,
    ) -> Response:
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            text = r.read().decode("utf-8")
        finally:
            conn.close()
        response = Response(r.status, r.headers, text)
        for cookie in response.set_cookies():
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in cookie.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str]) -> Response:
        return self.request("POST", path, form=form)

    def submit(self, page: str, action: str, form: dict[str, str]) -> Response:
        """GET ``page``, then POST ``form`` to ``action`` with the page's CSRF token."""
        token = self.get(page).csrf()
        return self.post(action, dict(form, csrf=token))

    def login(self, name: str, password: str, next_path: str = "") -> Response:
        token = self.get("/login").csrf()
        return self.post(
            "/login", {"csrf": token, "name": name, "password": password, "next": next_path}
        )
