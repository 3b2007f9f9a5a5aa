"""Embeddings: the text encoder (:mod:`.encoder`), its on-disk cache (:mod:`.cache`) and the step that
stores a workspace's embedding set (:mod:`.step`)."""

from curate.embed.cache import encode_cached
from curate.embed.encoder import auto_device, default_model_path, encode, load_model
from curate.embed.step import embed

__all__ = ["auto_device", "default_model_path", "embed", "encode", "encode_cached", "load_model"]
