"""Bounds and choices every entry point shares: the API checks them, the CLI offers them, the
docs state them. Written once, here."""

from __future__ import annotations

from typing import Literal

JobStatus = Literal["PENDING", "PROCESSING", "COMPLETED", "FAILED"]
STATUSES: tuple[JobStatus, ...] = ("PENDING", "PROCESSING", "COMPLETED", "FAILED")
ACTIVE_STATUSES: tuple[JobStatus, ...] = ("PENDING", "PROCESSING")

MAX_PROMPT_CHARS = 800
MAX_SPEAKERS = 20  # min_speakers / max_speakers: 1 to this
MAX_BEAM_SIZE = 10
PAGE_LIMIT = 100  # jobs in one page of a listing
