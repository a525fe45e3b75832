"""SMTP worker processes (``smtp.workers``): ``child`` is the worker process itself
(``python -m cgtwist.smtpworker.child``); ``supervisor`` is the server's side that starts,
watches, restarts and stops the children."""
