"""Commands of later capabilities: rerun and backfill."""

from __future__ import annotations
