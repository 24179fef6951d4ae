"""The ``medtl`` command line: one subcommand per workflow stage."""
