"""``twistd cgtwist``: command-line options and ``makeService``.

Owns option parsing and turning a bad bootstrap file into one line on stderr (``FILE:LINE:
KEY: problem``) and exit status 1, without twistd's usage text; the service tree
itself is built by cgtwist.service.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from cgtwist import config
from cgtwist.errors import ConfigError


class Options(usage.Options):
    synopsis = "[--config FILE] [--base-dir DIR] [--main-domain NAME] [--unprivileged-ports]"
    longdesc = (
        "Run the cgtwist mail server: SMTP (25, 587 submission, 465 implicit TLS), POP3 (110, "
        "995) and IMAP (143, 993) listeners over one spool and one account store. Static "
        "settings come from the bootstrap file (TOML, see etc/cgtwist.conf); everything else "
        "(domains, accounts, listeners, limits, Router) lives in the store and is changed with "
        "cgtwist-admin while the server runs. As root the default listeners are the standard "
        "ports on every address (0.0.0.0); without root, or with --unprivileged-ports, ports "
        "above 1024 on 127.0.0.1 (2525, 2587, 2465, 2110, 2995, 2143, 2993). SIGHUP reloads "
        "the TLS certificate and the dynamic settings; SIGUSR1 rotates the --logfile."
    )
    optParameters = [
        [
            "config",
            "c",
            None,
            "Bootstrap configuration file (TOML). Default: $CGTWIST_CONFIG, "
            "else built-in defaults (base directory ./spool).",
        ],
        [
            "base-dir",
            "d",
            None,
            "Base directory (spool, Queue/, Domains/, database, "
            "certificate). Overrides [server] base_dir.",
        ],
        ["main-domain", "m", None, "Main domain name. Overrides [server] main_domain."],
    ]
    optFlags = [
        [
            "unprivileged-ports",
            "u",
            "Default listeners on 2525, 2587, ... on 127.0.0.1 even as "
            "root. Overrides [server] unprivileged_ports.",
        ],
    ]

    def postOptions(self) -> None:
        overrides = {}
        if self["base-dir"]:
            overrides["base_dir"] = self["base-dir"]
        if self["main-domain"]:
            overrides["main_domain"] = self["main-domain"]
        try:
            cfg = config.load(self["config"], overrides)
        except ConfigError as e:
            # twistd answers a UsageError with its whole --help text before the one line
            # that matters; a bad file is not a usage error: say only what is wrong where.
            sys.stderr.write(f"{e}\n")
            raise SystemExit(1) from None
        if self["unprivileged-ports"]:
            cfg = dataclasses.replace(cfg, unprivileged_ports=True)
        self.cfg = cfg


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    # twistd opens --logfile after makeService and sets its own umask later, if at all (only
    # when it daemonizes): without this the log file, the store and the Maildirs were
    # readable by every local user. The service sets it again once twistd is done.
    os.umask(options.cfg.umask)
    from cgtwist.service import build

    service: Any = build(options.cfg, reactor)
    return service  # type: ignore[no-any-return]
