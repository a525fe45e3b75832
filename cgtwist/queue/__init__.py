"""cgtwist.queue: logical queues (``LOCAL(account)``, ``SMTP(domain)``, ...) and their draining.

``manager`` (QueueManager: entry, routing, starting deliveries, feeding outcomes back, and the
operations the administrator may use), ``outcome`` (an attempt's results, retry or expiry),
``reports`` (bounces, warnings, success reports, and removal once all is reported),
``scheduler`` (fair start order, one timer), ``logical`` (per-queue state), ``state``
(per-message records), ``data`` (message bytes in memory), ``config`` (the ``queue.*``
settings), ``admin`` (list/show/retry/hold/release/drop/bounce for ``cgtwist-admin``).
"""
