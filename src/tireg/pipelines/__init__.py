"""Rendering on diffusers pipelines: loading, embeddings, A1111 prompts, samplers, seeds."""
