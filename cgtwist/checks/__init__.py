"""Receiving-protection checks: each a function/class of its inputs returning a CheckResult.

Checks never raise for DNS or network trouble: the outcome is data (``CheckResult``) and
configuration (cgtwist.core.protection) decides what it means. They share one resolver,
passed in, and never import twisted.mail or twisted.web.
"""
