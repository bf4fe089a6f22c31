"""deployments/worker_setup.py: Serve's processes skip pandas; every other importer gets it."""

from __future__ import annotations

import pytest

from deployments.worker_setup import SERVE_UTILS, SkipPandasForServe, worker_runtime_env


def _find_from(module_name: str, fullname: str):
    """``find_spec`` called from code whose module is ``module_name``, as an import there calls it."""
    scope = {"__name__": module_name, "finder": SkipPandasForServe(), "fullname": fullname}
    exec("result = finder.find_spec(fullname)", scope)
    return scope["result"]


def test_serves_optional_pandas_import_is_refused():
    with pytest.raises(ModuleNotFoundError):
        _find_from(SERVE_UTILS, "pandas")


@pytest.mark.parametrize("importer", ["whisperx.alignment", "serve_app.diarization.pipeline", "__main__"])
def test_any_other_importer_gets_pandas_from_the_usual_finders(importer):
    assert _find_from(importer, "pandas") is None  # None: the next finder on sys.meta_path finds it


def test_only_pandas_itself_is_ever_refused():
    assert _find_from(SERVE_UTILS, "numpy") is None
    assert _find_from(SERVE_UTILS, "pandas.core") is None  # only reached once pandas is imported


def test_the_hook_reaches_every_worker_through_the_jobs_runtime_env():
    env = worker_runtime_env({"HF_HUB_OFFLINE": "1"})
    assert env["env_vars"] == {"HF_HUB_OFFLINE": "1"}
    module, _, function = env["worker_process_setup_hook"].rpartition(".")
    assert module == "deployments.worker_setup" and function == "setup"
