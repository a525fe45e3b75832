"""The IMAP4rev1 listener (RFC 3501): the factory ``app`` builds; the parts are the modules here."""

from cgtwist.protocols.imap.server import IMAPFactory

__all__ = ["IMAPFactory"]
