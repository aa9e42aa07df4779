"""tireg: the textual-inversion embedding registry.

The package is layered; see docs/architecture.md. Importing ``tireg`` imports nothing heavy:
torch, diffusers and transformers are imported only inside the functions that need them.
"""

__version__ = "0.1.0"
