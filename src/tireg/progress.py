"""The progress callbacks library calls take, defined once so every layer means the same thing.

Library code never draws a bar: it reports through one of these plain callables, and the CLI
(``tireg.cli.output``) turns the reports into rich progress bars. Three shapes, because three
kinds of work report differently:

* :data:`ByteProgress` — reading a file of known size (hashing a checkpoint): each call gives the
  bytes read since the last one, so a caller adds them to a bar it sized from the file.
* :data:`DownloadProgress` — a download, whose size only the server knows: each call gives the
  bytes done so far and the total, or None when the server does not say.
* :data:`ItemProgress` — many files (importing, syncing a source): each call gives the items
  done, the total, and what is being worked on.
"""

from __future__ import annotations

from collections.abc import Callable

ByteProgress = Callable[[int], None]
DownloadProgress = Callable[[int, int | None], None]
ItemProgress = Callable[[int, int, str], None]
