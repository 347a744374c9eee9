"""Engage: engagement plans for nonprofits, moved forward by Prefect."""

__version__ = "0.1.0"
