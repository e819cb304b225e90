import time

import pytest

from peftlab import hub
from peftlab.errors import PeftlabError


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    yield
    hub.hub_reachable.cache_clear()


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
