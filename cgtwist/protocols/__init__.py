"""The mail-access edges: the SMTP receiver (``smtp/``), IMAP (``imap/``) and POP3 (``pop3/``)
listeners, the one login path they share (``login``), and what their factories share
(``limits``, ``deadlines``, ``realm``, ``fastwrite``). Protocol code translates; it never
decides (STYLE.md): policy, submission, the cred Portal and the mailstore do."""
