"""cgtwist.queue: logical queues (``LOCAL(account)``, ``SMTP(domain)``, ...) and their draining.

``manager`` (QueueManager: entry, routing, delivery outcomes), ``scheduler`` (fair start order,
one timer), ``logical`` (per-queue state), ``state`` (per-message records), ``reports``
(bounces, warnings, completion), ``admin`` (list/show/retry/hold/release/drop/bounce).
"""
