"""Audit: a tamper-evident log of every decision (RFC 6962 hashing, signed checkpoints)."""
