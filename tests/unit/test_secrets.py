"""Secrets in the settings never print: not in repr, not in a dump, not in a log line; only the
arguments a replica is built with carry them, and a replica gets them back as secrets."""

from __future__ import annotations

import json
import logging

from serve_app.core.settings import Settings

SECRETS = {"api_key": "bootstrap-admin-key-42", "webhook_secret": "a-webhook-master-key", "s3_secret_key": "s3-key-x"}


def test_secrets_never_print(caplog):
    settings = Settings(**SECRETS)
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s %r", settings, settings)
    shown = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        json.dumps(settings.model_dump(mode="json")),
        caplog.text,
    ]
    for text in shown:
        for value in SECRETS.values():
            assert value not in text


def test_a_replica_gets_the_secrets_back_as_secrets():
    args = Settings(**SECRETS).replica_args()
    assert {k: args[k] for k in SECRETS} == SECRETS  # the one dump that carries them
    rebuilt = Settings(**args)
    assert {k: rebuilt.secret(k) for k in SECRETS} == SECRETS
    assert all(v not in repr(rebuilt) for v in SECRETS.values())
