"""Job rows made straight in the store, for tests that need one in a given state."""

from __future__ import annotations


def new_job(store, **overrides):
    """``JobStore.create`` of a tiny.en English transcription of tenant ``default``; keyword
    arguments override (``sync_owner=`` makes it PROCESSING, held by that owner)."""
    args = dict(
        user_id="default",
        filename="meeting notes.wav",
        model="tiny.en",
        language="en",
        task="transcribe",
        options={},
    )
    return store.create(**{**args, **overrides})
