"""The config keys' reference: each key's help is written where the key is defined, and the docs'
tables and ``train.py --help`` show every key with it."""

import dataclasses
import string

import pytest
from helpers.runners import train_in_process
from omegaconf import OmegaConf

from peftlab import reference
from peftlab.methods import REGISTRY
from peftlab.reference import Key
from peftlab.schema import groups

DOCUMENTED = list(groups())  # every key of every group has its help


def keys_of(group: str) -> list[Key]:
    return reference.group_keys(group, groups()[group])


@pytest.mark.parametrize("group", DOCUMENTED)
def test_every_key_has_its_help_where_it_is_defined(group):
    missing = [key.name for key in keys_of(group) if not key.help.strip()]
    assert not missing, f'keys without field(..., metadata={{"help": "..."}}): {missing}'


def test_the_groups_are_the_config_groups_and_one_per_method():
    schemas = groups()
    assert {"model", "dataset", "trainer", "generation", "tracking"} <= set(schemas)
    assert {group: schemas[group] for group in schemas if group.startswith("peft.")} == {
        f"peft.{method}": schema for method, schema in REGISTRY.items()
    }


@pytest.mark.parametrize("group", list(groups()))
def test_the_table_has_a_row_per_key_in_the_schemas_order(group):
    prefix = group.split(".")[0]
    names = [f"{prefix}.{field.name}" for field in dataclasses.fields(groups()[group])]
    table = reference.markdown_table(keys_of(group)).splitlines()
    assert [row.split("`")[1] for row in table[2:]] == names


def test_a_row_reads_as_the_key_is_typed():
    rows = {key.name: key for key in keys_of("peft.prompt_tuning")}
    assert rows["peft.prompt_tuning_init"][:3] == (
        "peft.prompt_tuning_init",
        "RANDOM, TEXT, SAMPLE_VOCAB",  # an enum's choices
        '"TEXT"',
    )
    lora = {key.name: key for key in keys_of("peft.lora")}
    assert lora["peft.target_modules"][1:3] == ("list[str] or null", '["all-linear"]')
    assert lora["peft.use_dora"][1:3] == ("bool", "false")
    model = {key.name: key for key in keys_of("model")}
    assert model["model.name_or_path"].default == "required"  # Hydra's ???: the option sets it


def test_table_cells_hold_plain_text():
    key = Key("peft.x", "int | str", '"a|<b>"', "peft=<method> | more")
    assert reference.markdown_table([key]).splitlines()[2] == (
        '| `peft.x` | int \\| str | `"a|<b>"` | peft=&lt;method&gt; \\| more |'
    )


@pytest.mark.parametrize("text", ["plain", "costs $5", "${oc.env:HOME}", "$$ and $HOME"])
def test_help_text_comes_out_of_hydras_template_as_written(text, monkeypatch):
    # Hydra resolves the template as an OmegaConf string (the keys through the resolver
    # register_help registers), then substitutes $NAME in it.
    monkeypatch.setattr(reference, "plain_text", lambda rows: text)
    template = OmegaConf.create({"listed": "${peftlab.help_keys:}"}).listed
    listed = "\n\n".join(f"{name}\n{text}" for name in groups())
    assert string.Template(template).substitute() == listed


def test_train_help_shows_every_key_with_its_help(tmp_path):
    result = train_in_process("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for group in groups():
        for key in keys_of(group):
            assert f"  {key.name}: {key.type} = {key.default}" in lines
    assert "      Rank of each low-rank update." in lines
    assert "$APP_CONFIG_GROUPS" not in result.stdout  # Hydra filled in its parts
    assert "peft: " in result.stdout and "--cfg,-c" in result.stdout
