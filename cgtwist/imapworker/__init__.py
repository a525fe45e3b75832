"""IMAP and POP3 sessions in worker processes (``imap.workers``): the server binds, workers
serve, and what an administrator sets or sees per IP and per account stays the server's."""
