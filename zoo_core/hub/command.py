"""``zoo pull``, ``zoo push``, ``zoo convert`` and ``zoo hub serve``."""

from __future__ import annotations

import click

# --- pull and convert -------------------------------------------------------------------------

# --- push and the local hub server ---------------------------------------------------------------
