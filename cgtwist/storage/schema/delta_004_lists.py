"""Schema 4: mailing lists (the LIST module), their subscribers, held posts and digest posts.

A list is an object of a domain (``name@domain``, removed with it); its fields are JSON in
``settings`` (cgtwist.lists.model.FIELDS). ``list_messages`` keeps the posts a list holds for
moderation (``kind`` 'held') and those waiting for the next digest ('digest'), base64 text so
the same column works on SQLite and PostgreSQL.
"""

STATEMENTS = [
    """CREATE TABLE lists (
        id {serial},
        domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}',
        last_digest {bigint} NOT NULL DEFAULT 0,
        digest_number INTEGER NOT NULL DEFAULT 0,
        created {bigint} NOT NULL,
        UNIQUE (domain_id, name)
    )""",
    """CREATE TABLE list_subscribers (
        list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
        address TEXT NOT NULL,
        mode TEXT NOT NULL DEFAULT 'feed',
        state TEXT NOT NULL DEFAULT 'active',
        bounces INTEGER NOT NULL DEFAULT 0,
        first_bounce {bigint} NOT NULL DEFAULT 0,
        suspended_at {bigint} NOT NULL DEFAULT 0,
        real_name TEXT NOT NULL DEFAULT '',
        created {bigint} NOT NULL,
        PRIMARY KEY (list_id, address)
    )""",
    """CREATE TABLE list_messages (
        id TEXT NOT NULL PRIMARY KEY,
        list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        sender TEXT NOT NULL DEFAULT '',
        subject TEXT NOT NULL DEFAULT '',
        created {bigint} NOT NULL,
        data TEXT NOT NULL
    )""",
    "CREATE INDEX list_messages_by_list ON list_messages (list_id, kind, created)",
]
