"""align4gen: align video diffusion transformers with cached self-supervised encoder features."""

__version__ = "0.1.0"
