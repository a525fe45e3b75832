"""Numbered schema deltas: ``delta_NNN_<what>.py``, each with ``STATEMENTS`` applied in order.

A delta is never edited once released; a change is a new delta. Statements are portable SQL;
``{serial}`` (auto-incrementing integer primary key) and ``{bigint}`` are filled in by the engine.
"""
