"""Diffusers pipelines for tireg's generator and trainer: any checkpoint a user has, loaded
offline (:func:`tireg.pipelines.loading.load_model`), and rendering on it: embeddings, A1111
prompts, samplers, seeds.

This package imports torch, diffusers and transformers only inside functions, so importing it
costs nothing and works without a GPU. It may import ``checkpoints``, ``converters`` and the
leaves, never the catalogue.
"""
