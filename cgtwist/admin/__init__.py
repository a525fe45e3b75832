"""The administrator's operations, once: what ``cgtwist-admin`` and WebAdmin both call.

Owns the capabilities (domains, accounts, aliases, settings, the Router, nodes, the queue) as
plain async methods that return values and raise errors with a user-facing message
(``cgtwist.admin.errors``). It must not parse arguments, print, render HTML or decide who may
do what: the CLI (cgtwist.cli) and the web pages (cgtwist.web) are thin edges over it, and the
web's rights check happens before a call reaches here.
"""

from cgtwist.admin.errors import AdminError, ServerDown, user_message
from cgtwist.admin.operations import AccountPage, Admin

__all__ = ["Admin", "AccountPage", "AdminError", "ServerDown", "user_message"]
