"""Errors that are the user's to fix: the CLIs print them as one line and exit 2."""
from __future__ import annotations

import argparse
from typing import NoReturn


class UserError(Exception):
    """Bad input or a missing resource, described in one line for the user."""


class UsageParser(argparse.ArgumentParser):
    """argparse whose usage errors are a UserError (one line, exit 2) instead of usage text."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)
