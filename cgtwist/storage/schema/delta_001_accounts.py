"""Schema 1: domains, domain aliases, accounts, aliases, server settings, bootstrap markers."""

STATEMENTS = [
    """CREATE TABLE domains (
        id {serial},
        name TEXT NOT NULL UNIQUE,
        enabled INTEGER NOT NULL DEFAULT 1,
        services TEXT,
        settings TEXT NOT NULL DEFAULT '{}',
        created {bigint} NOT NULL
    )""",
    """CREATE TABLE domain_aliases (
        name TEXT NOT NULL PRIMARY KEY,
        domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE
    )""",
    """CREATE TABLE accounts (
        id {serial},
        domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        password TEXT,
        real_name TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL DEFAULT 'user',
        enabled INTEGER NOT NULL DEFAULT 1,
        services TEXT,
        settings TEXT NOT NULL DEFAULT '{}',
        created {bigint} NOT NULL,
        UNIQUE (domain_id, name)
    )""",
    """CREATE TABLE aliases (
        id {serial},
        domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        target TEXT NOT NULL,
        UNIQUE (domain_id, name)
    )""",
    """CREATE TABLE server_settings (
        name TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE meta (
        name TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL
    )""",
]
