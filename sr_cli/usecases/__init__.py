"""Use cases: what a command does, free of the command line (no typer, no rich).

A command function parses options, calls a use case and prints; the warm worker (``srx serve``), device sharding
and Ray run the same use case, so every path writes the same files with the same guarantees.
"""
