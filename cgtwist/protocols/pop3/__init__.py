"""The POP3 listener (RFC 1939): the factory ``app`` builds; the parts are the modules here."""

from cgtwist.protocols.pop3.server import POP3Factory

__all__ = ["POP3Factory"]
