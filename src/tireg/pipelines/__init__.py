"""Diffusers pipelines for tireg's generator and trainer: any checkpoint a user has, loaded offline.

Loading (:func:`tireg.pipelines.loading.load_model`), embeddings, A1111 prompts, samplers, seeds
and rendering. This package imports torch, diffusers and transformers only inside functions, so
importing it costs nothing and works without a GPU. It may import ``checkpoints``,
``converters`` and the leaves, never the catalogue.
"""
