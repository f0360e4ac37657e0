"""Sub-commands of the ``strg`` command line (see strg/cli.py)."""
