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
import uuid
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
        headers: Optional[dict[str, str]] = None,
    ) -> Response:
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
        if body is not None:
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
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

    def get(self, path: str, headers: Optional[dict[str, str]] = None) -> Response:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, form: dict[str, str]) -> Response:
        return self.request("POST", path, form=form)

    def upload(
        self, path: str, form: dict[str, str], files: dict[str, tuple[str, bytes]]
    ) -> Response:
        """POST as a browser sends a form with ``enctype="multipart/form-data"``: ``form``'s
        fields, and each of ``files`` (field -> (file name, content)) as a file part."""
        boundary = "----cgtwist-test-" + uuid.uuid4().hex
        parts = []
        for name, value in form.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                + value.encode()
                + b"\r\n"
            )
        for name, (filename, content) in files.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: text/csv\r\n\r\n'.encode()
                + content
                + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return self.request("POST", path, body=body, headers=headers)

    def submit(self, page: str, action: str, form: dict[str, str]) -> Response:
        """GET ``page``, then POST ``form`` to ``action`` with the page's CSRF token."""
        token = self.get(page).csrf()
        return self.post(action, dict(form, csrf=token))

    def login(self, name: str, password: str, next_path: str = "") -> Response:
        token = self.get("/login").csrf()
        return self.post(
            "/login", {"csrf": token, "name": name, "password": password, "next": next_path}
        )


def form_values(page: str, action: str) -> dict[str, str]:
    """What a browser would submit from the form posting to ``action`` as the page shows it:
    every named input (checked boxes only), textarea and selected option."""
    from html.parser import HTMLParser

    class Forms(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.inside = False
            self.values: dict[str, str] = {}
            self.textarea: Optional[str] = None
            self.select: Optional[str] = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
            a = {k: v or "" for k, v in attrs}
            if tag == "form":
                self.inside = a.get("action") == action
            if not self.inside or "name" not in a and tag != "option":
                return
            if tag == "input":
                if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                    return
                self.values[a["name"]] = a.get("value", "")
            elif tag == "textarea":
                self.textarea = a["name"]
                self.values[a["name"]] = ""
            elif tag == "select":
                self.select = a["name"]
            elif tag == "option" and self.select and "selected" in a:
                self.values[self.select] = a.get("value", "")

        def handle_endtag(self, tag: str) -> None:
            if tag == "form":
                self.inside = False
            elif tag == "textarea":
                self.textarea = None
            elif tag == "select":
                self.select = None

        def handle_data(self, data: str) -> None:
            if self.inside and self.textarea is not None:
                self.values[self.textarea] += data

    parser = Forms()
    parser.feed(page)
    # HTML drops one newline right after <textarea>, as a browser does
    return {
        k: (v[1:] if v.startswith("\n") and k in _textareas(page) else v)
        for k, v in parser.values.items()
    }


def _textareas(page: str) -> set[str]:
    return set(re.findall(r'<textarea[^>]*name="([^"]+)"', page))
