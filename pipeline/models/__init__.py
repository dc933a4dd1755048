"""Custos's own models: signed manifests, the registry in ``models/``, safe artifacts, live swaps.

manifest (what a model is, signed) → registry (verified load, promotion history) → runtime
(which model a worker runs, hot swaps) ; train (how the default detector is made).
"""
