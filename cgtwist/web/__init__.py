"""WebAdmin and WebUser: the administrator's and the user's pages, on twisted.web in the
server's own process.

The edge for browsers, as cgtwist.protocols is for mail clients: it translates forms into
cgtwist.admin operations and renders their results; it never decides what mail does and never
imports cgtwist.protocols. ``panel.WebPanel`` is what the composition root builds (one per
server, shared by every ``http`` listener, so a session works on each of them).
"""
