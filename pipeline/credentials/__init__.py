"""Ephemeral task credentials: the reference just-in-time issuer (`custos broker`)."""
