"""triage: active learning run as an always-on streaming service."""

from __future__ import annotations

__version__ = "0.1.0"
