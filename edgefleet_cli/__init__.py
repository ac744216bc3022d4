"""The ``edgefleet`` command line: one command, a subcommand per noun."""
