"""Externally authored evaluation worlds: labelled OCSF traffic Custos was not tuned on.

Each world is a pure-Python, deterministic generator that writes events only against the public
input contract (``docs/EVENTS.md``), never against Custos's detection code.

- :mod:`pipeline.simulate.worlds.agentdojo`: agents running the four AgentDojo suites (workspace,
  travel, banking, slack) with prompt-injection campaigns taken from AgentDojo's injection tasks.
"""

from pipeline.simulate.worlds.agentdojo import KINDS, World, build_world, write_world

__all__ = ["KINDS", "World", "build_world", "write_world"]
