"""Schema 3: Rules (Server, Domain, Account), what vacation replies answered, remembered lists.

``rule_sets`` holds each rule set's text form (cgtwist.rules.text) with a revision that every
change bumps, per scope: ``server`` (owner ''), ``domain`` (owner the domain name) and
``account`` (owner ``name@domain``). ``rule_replies`` remembers when an account's
``Reply with`` last answered a sender (at most once per sender per interval, RFC 3834 §2);
``rule_lists`` keeps the addresses ``Remember 'From' in`` collected, per owner and list.
"""

STATEMENTS = [
    """CREATE TABLE rule_sets (
        scope TEXT NOT NULL,
        owner TEXT NOT NULL,
        revision INTEGER NOT NULL,
        text TEXT NOT NULL,
        updated {bigint} NOT NULL,
        PRIMARY KEY (scope, owner)
    )""",
    """CREATE TABLE rule_replies (
        account TEXT NOT NULL,
        sender TEXT NOT NULL,
        answered {bigint} NOT NULL,
        PRIMARY KEY (account, sender)
    )""",
    """CREATE TABLE rule_lists (
        owner TEXT NOT NULL,
        list TEXT NOT NULL,
        address TEXT NOT NULL,
        added {bigint} NOT NULL,
        PRIMARY KEY (owner, list, address)
    )""",
]
