"""A step's email rendered from its Jinja2 templates: variables, the renderer, frames for speed. Pure: no database."""

from engage.rendering.context import (
    EMAIL_PARTS,
    TOP_LEVEL_NAMES,
    RenderedEmail,
    Signer,
    Variables,
    email_context,
    signer,
)
from engage.rendering.renderer import EmailProblem, EmailRenderer, get_renderer
from engage.rendering.samples import SamplePeople, sample_contexts, sample_people, sample_unsubscribe_url

__all__ = [
    "EMAIL_PARTS",
    "EmailProblem",
    "EmailRenderer",
    "RenderedEmail",
    "SamplePeople",
    "Signer",
    "TOP_LEVEL_NAMES",
    "Variables",
    "email_context",
    "get_renderer",
    "sample_contexts",
    "sample_people",
    "sample_unsubscribe_url",
    "signer",
]
