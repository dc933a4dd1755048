"""Responders: act on quarantine commands through adapters, acknowledge every one."""
