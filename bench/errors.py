"""Errors that are the user's to fix: the CLIs print them as one line and exit 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad input or a missing resource, described in one line for the user."""
