"""Schema 2: nodes and their own settings (several servers on one database, docs/CLUSTER.md).

``nodes`` records each server that opened the database under a node name (``[server] node``),
for ``cgtwist-admin node list``. ``node_settings`` holds the settings that belong to one node
(cgtwist.settings.NODE_SETTINGS: listeners, smtp.workers, pipe.app_dir); ``server_settings``
keeps the cluster-wide ones. A single server's node settings move to the node ``default``, the
node a server is without ``[server] node``, so it keeps its listeners across the upgrade.
"""

# The node settings as they were when this delta was written; a delta never changes.
_MOVED = "('listeners', 'smtp.workers', 'pipe.app_dir')"

STATEMENTS = [
    """CREATE TABLE nodes (
        name TEXT NOT NULL PRIMARY KEY,
        hostname TEXT NOT NULL DEFAULT '',
        started {bigint} NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE node_settings (
        node TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (node, name)
    )""",
    "INSERT INTO node_settings (node, name, value) SELECT 'default', name, value "
    f"FROM server_settings WHERE name IN {_MOVED}",
    f"DELETE FROM server_settings WHERE name IN {_MOVED}",
]
