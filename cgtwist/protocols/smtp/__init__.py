"""The SMTP receiver (RFC 5321): the factory ``app`` builds; the parts are the modules here."""

from cgtwist.protocols.smtp.factory import SMTPFactory

__all__ = ["SMTPFactory"]
