"""Model code: resolving checkpoints, loading spans and heads, running spans with caches."""

from plexus.models.families import FAMILIES
from plexus.models.head import ClientHead
from plexus.models.loading import load_head, load_span, parse_dtype
from plexus.models.resolve import TINY_MODEL_NAME, ModelFiles, open_model
from plexus.models.session import SpanSession
from plexus.models.span import SpanModel

__all__ = [
    "FAMILIES",
    "TINY_MODEL_NAME",
    "ClientHead",
    "ModelFiles",
    "SpanModel",
    "SpanSession",
    "load_head",
    "load_span",
    "open_model",
    "parse_dtype",
]
