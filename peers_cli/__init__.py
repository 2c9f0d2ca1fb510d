"""The ``peers`` command line."""
