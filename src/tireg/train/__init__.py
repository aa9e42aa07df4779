"""Training new textual-inversion embeddings on any SD 1.x, 2.x or SDXL checkpoint.

One module per concept: :mod:`.settings` (every option and its default's source),
:mod:`.data` (images, captions, templates, cached latents, batches), :mod:`.vectors` (the only
parameters, and how they reach the encoders), :mod:`.schedules` (A1111's ``rate:step`` syntax),
:mod:`.dvar` (early stopping), :mod:`.checkpointing` (resumable runs), :mod:`.compiling`
(``--compile`` and its fallback), :mod:`.loop` (the loop),
:mod:`.records` (what a run leaves: log, loss curve, cards, catalogue entries).

Importing this package imports torch; the CLI imports it inside the ``train`` command only.
"""
