"""Custos: streaming behavioural detection for Zero Trust (humans, services, AI agents)."""

__version__ = "0.1.0"
