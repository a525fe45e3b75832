"""Return-path DNS check: does the MAIL FROM domain exist and could it take a bounce?

Owns one question, asked through the resolver passed in: the domain has an MX, or else an A or
AAAA record (the implicit MX of RFC 5321 §5.1). Outcomes: pass; fail (NXDOMAIN or no
MX/A/AAAA: 550 5.1.8 at the caller); nullmx (RFC 7505 "MX 0 ." : 550 5.7.27); temperror
(SERVFAIL/timeout: 451 4.4.3, never a bounce, CommuniGate "Verify Return-Path"). Never raises.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from cgtwist.checks.result import FAIL, PASS, SKIPPED, TEMPERROR, CheckResult, clean
from cgtwist.errors import DNSPermanentError, DNSTemporaryError, MailError
from cgtwist.interfaces import IResolver
from cgtwist.logs import Logger

log = Logger()

NULLMX = "nullmx"

# What each outcome means at MAIL FROM (the protection policy raises these).
REPLIES = {
    FAIL: MailError(550, "5.1.8", "Sender address rejected: domain not found"),
    NULLMX: MailError(550, "5.7.27", "Sender address rejected: domain accepts no mail"),
    TEMPERROR: MailError(451, "4.4.3", "Sender domain lookup failed, try again later"),
}


def sender_domain(sender: str) -> str:
    """The domain of a reverse-path (``""`` for ``<>`` or a missing domain)."""
    if "@" not in sender:
        return ""
    return sender.rpartition("@")[2].strip().rstrip(".").lower()


@defer.inlineCallbacks
def check_return_path(resolver: IResolver, sender: str, clock: Any) -> Any:
    """Fires with CheckResult("returnpath", pass|fail|nullmx|temperror|skipped, ...)."""
    started = clock.seconds()
    dns: Any = resolver  # an IResolver

    def result(outcome: str, reason: str) -> CheckResult:
        return CheckResult(
            "returnpath", outcome, reason, clock.seconds() - started, {"domain": domain}
        )

    domain = sender_domain(sender)
    if not sender:
        return CheckResult("returnpath", SKIPPED, "null reverse-path")
    if not domain or domain.startswith("["):
        # Address literals cannot be checked in DNS; syntax is the SMTP layer's job.
        return result(SKIPPED if domain else FAIL, "address literal" if domain else "no domain")
    try:
        mx = yield dns.lookup_mx(domain)
        if mx:
            if all(host == "" for _pref, host in mx):
                return result(NULLMX, f"{clean(domain)} has a null MX")
            return result(PASS, "MX found")
        for lookup in (dns.lookup_a, dns.lookup_aaaa):
            if (yield lookup(domain)):
                return result(PASS, "address record found")
        return result(FAIL, f"{clean(domain)} has no MX, A or AAAA record")
    except DNSPermanentError:
        return result(FAIL, f"{clean(domain)} does not exist")
    except DNSTemporaryError as e:
        return result(TEMPERROR, f"DNS failure for {clean(domain)}: {clean(e)}")
    except Exception as e:  # a resolver bug must not become a 5xx
        log.failure("return-path check crashed for {domain}", domain=domain)
        return result(TEMPERROR, f"internal error: {type(e).__name__}")
