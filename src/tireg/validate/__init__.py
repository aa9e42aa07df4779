"""Validation: render embeddings on checkpoints as A1111-faithful grids, recorded as evidence.

``validate`` sits above ``pipelines`` (loading, embeddings, rendering) and ``registry`` (naming
embeddings and models, recording runs); ``registry`` never imports it.
"""
