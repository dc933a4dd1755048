"""Quarantine: signed OpenC2 commands from detection to responders, and their acknowledgements."""
