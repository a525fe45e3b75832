"""Schema 5: Forwarders and Groups (CommuniGate's domain objects beside accounts and aliases).

A ``groups`` row is a name in a domain that is neither an account nor an alias: ``kind``
``forwarder`` (mail to it goes on to its targets and is accepted from anyone, as mail to any
local name is) or ``group`` (mail to it is delivered to each member). ``targets`` is a JSON
list of addresses. A name is an account, an alias or a group, never two of them.
"""

STATEMENTS = [
    """CREATE TABLE groups (
        id {serial},
        domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        targets TEXT NOT NULL,
        created {bigint} NOT NULL,
        UNIQUE (domain_id, name)
    )""",
]
