"""The `toygpt` command line: parses options, calls the core library, renders with rich.

Nothing here imports torch at module level, so `toygpt --help` and commands that need no
model start instantly.
"""
