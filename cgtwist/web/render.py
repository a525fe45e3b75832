"""Pages as HTML: the Jinja2 environment (autoescaping on) and the reply values handlers return.

Owns turning a template name and values into bytes, and what a reply is (status, body,
redirect, extra headers). It must not know about sessions, rights or the store.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Optional

import jinja2

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


@dataclass
class Reply:
    """What a handler answers: a page (``body``) or a redirect (``location``, 303)."""

    status: int = 200
    body: bytes = b""
    location: Optional[str] = None
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, Optional[str]] = field(default_factory=dict)  # None: delete it


def url_part(text: str) -> str:
    """A domain or a name as one segment of a page's path: quoted, its ``@`` kept."""
    return urllib.parse.quote(text, safe="@")


def redirect(location: str) -> Reply:
    """303 See Other: after a POST the browser GETs the result (no resubmission on reload)."""
    return Reply(status=303, location=location)


class Templates:
    """The page templates, loaded once; every value is HTML-escaped unless marked safe."""

    def __init__(self, folder: str = TEMPLATES) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folder),
            autoescape=True,  # every value a user or the store gave is escaped
            undefined=jinja2.StrictUndefined,  # a misspelt name is an error in the tests
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def page(self, template: str, /, status: int = 200, **values: Any) -> Reply:
        body = self.env.get_template(template).render(**values).encode("utf-8")
        return Reply(status=status, body=body)
