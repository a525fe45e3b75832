"""twistd plugin: ``twistd cgtwist`` builds the service tree in cgtwist.tap."""

from twisted.application.service import ServiceMaker

cgtwist = ServiceMaker("cgtwist", "cgtwist.tap", "CommuniGate-style mail server (SMTP, POP3, IMAP)", "cgtwist")
