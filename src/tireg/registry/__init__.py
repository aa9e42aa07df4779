"""The catalogue's behaviour: the content store, importing, the search index, installing.

:mod:`tireg.db` is the schema and the connection; this package is what tireg *does* with them.
It may use converters, checkpoints and sources; only the CLI sits above it.
"""
