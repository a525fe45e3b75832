"""Outbound SMTP delivery in worker processes (``smtp.delivery_workers``): ``wire`` is the
line protocol between the server and a worker, ``child`` the worker process itself
(``python -m cgtwist.outworker.child``), ``supervisor`` the server's side that starts them and
hands them attempts, ``agent`` the SMTP delivery agent the queue manager calls."""
