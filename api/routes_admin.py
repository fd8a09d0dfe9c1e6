"""Administration routes (lifecycle, overrides, imports, resets, audit) — see issue 3."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin", __name__)
