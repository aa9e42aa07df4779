"""The progress callbacks library calls take, defined once so every layer means the same thing.

Library code never draws a bar: it reports through one of these plain callables, and the CLI
(``tireg.cli.output``) turns the reports into rich progress bars. Three shapes, because three
kinds of work report differently:

* :data:`Advance` — work whose size the caller knows (the bytes of a checkpoint being hashed,
  the images of a validation run): each call gives how many more units are done since the last
  one, as rich's ``advance`` takes them.
* :data:`DownloadProgress` — a download, whose size only the server knows: each call gives the
  bytes done so far and the total, or None when the server does not say.
* :data:`ItemProgress` — many files (importing, syncing a source): each call gives the items
  done, the total, and what is being worked on.
"""

from __future__ import annotations

from collections.abc import Callable

Advance = Callable[[int], None]
DownloadProgress = Callable[[int, int | None], None]
ItemProgress = Callable[[int, int, str], None]
