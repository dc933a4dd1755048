"""The analyst console: a web application over its own store of the worker's outputs."""
