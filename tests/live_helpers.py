"""Reading one post's vector out of a live index, the way the hot path reads a batch."""

from __future__ import annotations


def vector_of(index, post_id: str):
    """The live index's vector for post_id, or None when it does not know the post."""
    known, vectors = index.vectors_for([post_id])
    return vectors[0] if known[0] else None
