"""The staff digest: each staff member's morning email of their day."""

from engage.digest.collect import NEWS, TO_DO, Digest, DigestLine, collect_digests, digest_due
from engage.digest.render import RenderedDigest, compose_digest, render_digest
from engage.digest.send import EMPTY, DigestOutcome, send_digests

__all__ = [
    "Digest",
    "DigestLine",
    "DigestOutcome",
    "EMPTY",
    "NEWS",
    "RenderedDigest",
    "TO_DO",
    "collect_digests",
    "compose_digest",
    "digest_due",
    "render_digest",
    "send_digests",
]
