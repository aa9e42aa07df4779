"""The ``tireg`` command line: thin commands over the library (see :mod:`tireg.cli.app`)."""
