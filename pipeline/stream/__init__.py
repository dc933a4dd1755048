"""Stream wiring: the only package that imports faust."""
