"""Diffusers pipelines for tireg's generator and trainer: any checkpoint a user has, loaded
offline; embeddings applied as the UIs do; A1111 prompts, samplers and seeds; rendering.

The entry points are :func:`tireg.pipelines.loading.load_model` and
:func:`tireg.pipelines.render.render`. This package imports torch, diffusers and transformers
only inside functions, so importing it costs nothing and works without a GPU. It may import
``checkpoints``, ``converters`` and the leaves, never the catalogue.
"""
