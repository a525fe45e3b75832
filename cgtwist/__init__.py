"""cgtwist: a CommuniGate Pro-style mail server on Twisted.

The package is layered; dependencies point down only:
edges (protocols, listeners, web, cli) -> core -> queue/delivery -> storage/spool/dns/checks
-> pure logic (types, errors, address, router, paths, config).
"""

__version__ = "0.1.0"
