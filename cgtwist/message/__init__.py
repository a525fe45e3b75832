"""Message text helpers: trace headers and header-safe formatting (pure, no I/O)."""
