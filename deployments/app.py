"""The application: ``build_app(args)`` is the import_path of serve_config.yaml.

Ray Serve wiring only. Each deployment lives in a module of its own with the one function that
turns the profile and the settings into its options; this module binds them together.
"""

from __future__ import annotations

from ray.serve import Application

from deployments.diarizer import diarizer_deployment
from deployments.ingress import ingress_deployment
from deployments.job_worker import worker_deployment
from deployments.preprocessor import preprocessor_deployment
from deployments.profiles import load_profile
from deployments.transcriber import transcriber_deployment
from serve_app.asr.catalog import ModelCatalog
from serve_app.core.settings import Settings

APP_NAME = "speechtotext"


def build_settings(args: dict | None) -> Settings:
    """``args`` (serve_config.yaml's ``args``) over the STT_* environment; an unknown key fails."""
    args = dict(args or {})
    unknown = sorted(set(args) - set(Settings.model_fields))
    if unknown:
        raise ValueError(f"unknown build_app args {unknown}; known: {', '.join(sorted(Settings.model_fields))}")
    return Settings(**args)


def build_app(args: dict | None = None) -> Application:
    """The application: ``args`` override STT_* settings (serve_config.yaml's ``args``)."""
    from deployments.embedded_database import deployment_database_url

    settings = build_settings(args)
    settings.check_exposure()  # no open service on an address other machines reach
    profile = load_profile(settings.profile)  # a bad profile stops the deploy here
    catalog = ModelCatalog.load(settings.catalog_path, settings.cache_dir)
    for name in settings.models:
        catalog.get(name)  # so does an unknown model, with the known names
    # With no database configured, an embedded PostgreSQL starts, owned by something that
    # outlives the build (deployments/embedded_database.py), and every replica gets its URL.
    settings = settings.model_copy(update={"database_url": deployment_database_url(settings)})

    transcribers = {name: transcriber_deployment(name, profile.transcriber, settings) for name in settings.models}
    diarizer = diarizer_deployment(profile.diarizer, settings) if settings.diarization else None
    preprocessor = preprocessor_deployment(profile.preprocessor, settings, transcribers, diarizer)
    worker = worker_deployment(profile.worker, settings, preprocessor, transcribers)
    return ingress_deployment(profile.ingress, settings, preprocessor, transcribers, worker)
