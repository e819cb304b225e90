import os
import time
from pathlib import Path

import pytest
from helpers.configs import compose_config, in_process_overrides

from peftlab import data, hub, modeling
from peftlab.errors import PeftlabError
from peftlab.schema import to_settings


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_uncached_hub_id_offline_fails_fast_naming_id_cache_and_alternative(offline):
    start = time.monotonic()
    with pytest.raises(PeftlabError) as error:
        hub.resolve(
            "peftlab-tests/never-cached",
            key="model.name_or_path",
            repo_type="model",
            offline_alternative="model=smollm2-135m",
        )
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert message.startswith("model.name_or_path='peftlab-tests/never-cached'")
    assert "not in the local cache" in message and "model=smollm2-135m" in message
    assert "\n" not in message


def test_local_paths_pass_through_offline(offline, tmp_path):
    assert hub.resolve(str(tmp_path), key="k", repo_type="model", offline_alternative="x") == str(
        tmp_path
    )


def test_hub_reachable_is_false_offline(offline):
    assert hub.hub_reachable() is False


def test_missing_local_path_is_not_mistaken_for_a_hub_id(tmp_path):
    missing = str(tmp_path / "gone")
    with pytest.raises(PeftlabError, match=f"model.name_or_path='{missing}': no such file"):
        hub.resolve(missing, key="model.name_or_path", repo_type="model", offline_alternative="x")


@pytest.mark.parametrize(
    ("preset", "load", "message", "alternative"),
    [
        ("dataset=awesome-chatgpt-prompts", lambda cfg: data.load_splits(cfg.dataset),
         "dataset.path='fka/awesome-chatgpt-prompts'", "dataset=prompts-sample"),
        ("dataset=english-quotes", lambda cfg: data.load_splits(cfg.dataset),
         "dataset.path='Abirate/english_quotes'", "dataset=prompts-sample"),
        ("model=bloomz-560m", lambda cfg: modeling.load(cfg.model),
         "model.name_or_path='bigscience/bloomz-560m'", "model=smollm2-135m"),
    ],
)  # fmt: skip
def test_the_hub_presets_fail_fast_offline_naming_the_sample_to_use(
    offline, tmp_path: Path, preset: str, load, message: str, alternative: str
):
    """The notebook's model and datasets, through the code a run uses, with an empty cache."""
    store = [f"tracking.uri=sqlite:///{tmp_path}/db", *in_process_overrides(tmp_path)]
    cfg = to_settings(compose_config([preset, *store]))
    start = time.monotonic()
    with pytest.raises(PeftlabError) as error:
        load(cfg)
    assert time.monotonic() - start < 10
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert "not in the local cache" in str(error.value)
    assert alternative in str(error.value)


def test_the_libraries_caches_are_the_tests_own():
    """Set before any library was imported (they read it once, then): no test reads or fills
    the user's ~/.cache, nor finds a model there that a fresh machine lacks."""
    import matplotlib
    from huggingface_hub import constants

    tests_caches = Path(os.environ["HF_HOME"]).parent
    assert tests_caches.name.startswith("peftlab-test-caches-")
    assert Path(constants.HF_HUB_CACHE).is_relative_to(tests_caches)
    assert Path(matplotlib.get_cachedir()).is_relative_to(tests_caches)
