"""An embedding read against a model's vocabulary, and embeddings made from words.

A layer beside ``validate`` and ``train``: it reads token tables through ``pipelines`` and
records what it makes through ``registry``.
"""
