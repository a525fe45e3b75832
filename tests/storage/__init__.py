"""Tests for cgtwist.storage."""
