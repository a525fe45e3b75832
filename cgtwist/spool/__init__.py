"""cgtwist.spool: CommuniGate's ``Queue/`` folder - durable message files, journal, recovery.

``format`` (pure: file and journal layout), ``files`` (fsync primitives, group commit),
``spool`` (the ISpool implementation ``Spool``). Nothing is imported here so that the pure
``format`` module stays importable without the reactor.
"""
