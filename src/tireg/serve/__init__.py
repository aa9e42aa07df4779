"""``tireg serve``: the catalogue as a local, server-rendered web gallery.

Why a layer of its own: the gallery is a second front end beside the CLI, built on the same
library calls (:mod:`tireg.registry`), so everything it shows or does is also a Python call and
a command. Only ``tireg serve`` imports it, which keeps Flask out of every other command.
"""
