"""One module per noun of the ``edgefleet`` command."""
