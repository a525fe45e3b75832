"""Power-loss crash-state harness: fsync boundaries cut on loop-mounted ext4 (see README.md)."""
