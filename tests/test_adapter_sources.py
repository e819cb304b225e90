"""Where adapters come from: what a source reads, and the one-line answers to bad input."""

import pytest

from peftlab.adapter_sources import from_dir, name_value, with_overrides
from peftlab.config import GenerationSettings
from peftlab.errors import PeftlabError


def test_generation_flags_override_the_stored_settings():
    stored = GenerationSettings(max_new_tokens=48, repetition_penalty=1.5)
    changed = with_overrides(stored, max_new_tokens=5, temperature=None)
    assert (changed.max_new_tokens, changed.repetition_penalty, changed.temperature) == (
        5,
        1.5,
        1.0,
    )


def test_an_input_is_name_equals_value():
    assert name_value(" act =Poet = bard") == ("act", "Poet = bard")
    with pytest.raises(PeftlabError, match=r"^input 'Poet': write NAME=VALUE, e.g. act=Poet$"):
        name_value("Poet")
    with pytest.raises(PeftlabError, match=r"^input '=Poet': write NAME=VALUE"):
        name_value("=Poet")


def test_a_folder_without_an_adapter_config_is_one_line(tmp_path):
    with pytest.raises(PeftlabError, match=rf"^--run '{tmp_path}': no adapter_config.json in "):
        from_dir(tmp_path)
