"""The Gradio demo, in a real headless Chromium driven by Playwright."""

import html
import json
import re
from pathlib import Path

import pytest
from helpers.browser import CHROMIUM_ARGS, chromium
from helpers.cluster import free_port
from helpers.runners import peftlab, run_tiny
from helpers.stores import sweep_parts
from mlflow.tracking import MlflowClient
from playwright.sync_api import expect, sync_playwright

from peftlab import adapter_sources, demo, names


@pytest.fixture(scope="module")
def store(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("demo")
    best = run_tiny(tiny_bloom, work, "peft.num_virtual_tokens=6", "trainer.learning_rate=0.03")
    other = run_tiny(tiny_bloom, work, "peft.num_virtual_tokens=2", name="other")
    return MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db"), best, other


def test_lists_finished_adapter_runs_best_first(store):
    client, best, other = store
    runs = demo.adapter_runs(client, "peftlab")
    ordered = sorted([best, other], key=lambda r: r.eval_loss)
    assert [r.info.run_id for r in runs] == [r.run_id for r in ordered]
    labels = demo.run_labels(runs)
    # The method, then what tells the runs apart (tokens and learning rate, not the dataset).
    assert labels[0].startswith(f"prompt_tuning ({runs[0].info.run_id[:8]}) · ")
    assert "peft.num_virtual_tokens=" in labels[0] and "trainer.learning_rate=" in labels[0]
    assert "dataset.name" not in labels[0] and "eval_loss " in labels[0]


def test_adapters_of_different_methods_give_their_own_outputs(runs_of_each_kind):
    client, results = runs_of_each_kind
    generator = demo.Generator(client)
    prompt = results[0].samples[0].prompt
    settings = adapter_sources.from_run(client.get_run(results[0].run_id), client).generation
    outputs = generator.outputs([r.run_id for r in results], prompt, settings)
    assert [text for _, text in outputs] == [
        results[0].samples[0].untuned,
        *(r.samples[0].tuned for r in results),
    ]
    labels = demo.run_labels([client.get_run(r.run_id) for r in results])
    methods = [client.get_run(r.run_id).data.params["peft.method"] for r in results]
    assert [label.split(" (")[0] for label in labels] == methods
    # Learning rates differ between methods; every prompt-learning run here has 4 virtual
    # tokens, and LoRA's rank is implied by "lora": neither tells the runs apart.
    assert all("trainer.learning_rate=" in label for label in labels)
    assert not any("peft.num_virtual_tokens=" in label or "peft.r=" in label for label in labels)


def test_a_task_run_turns_what_is_typed_into_its_prompt(method_sweep: Path):
    """Typing a role into the demo with a prompts-task run picked gives what that run wrote
    for the role in its scored held-out generations, and what the base model wrote there."""
    client, _, children = sweep_parts(method_sweep)
    (lora,) = [c for c in children if c.data.params["peft.method"] == "lora"]
    path = client.download_artifacts(lora.info.run_id, names.GENERATIONS_TABLE)
    table = json.loads(Path(path).read_text())
    row = dict(zip(table["columns"], table["data"][0], strict=True))
    act = row["prompt"].removeprefix("Role: ").split("\n")[0]
    settings = adapter_sources.from_run(lora, client).generation
    outputs = demo.Generator(client).outputs([lora.info.run_id], act, settings)
    assert [text for _, text in outputs] == [row["untuned"], row["tuned"]]


def test_without_runs_it_says_how_to_make_one(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert demo.adapter_runs(client, "peftlab") == []
    assert "make train" in demo.empty_message("peftlab")


@pytest.mark.process
def test_browser_picks_an_adapter_and_sees_base_and_tuned_outputs(store, screenshots):
    client, best, _ = store
    executable = chromium()
    port = free_port()
    app = demo.build(client, "peftlab")
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_label("Prompt", exact=True).fill(best.samples[0].prompt)
            page.get_by_role("button", name="Generate").click()
            outputs = page.locator(".peftlab-output")
            expect(outputs).to_have_count(2, timeout=60_000)
            titles = outputs.locator("h3").all_inner_texts()
            texts = outputs.locator("p").all_inner_texts()
            page.screenshot(path=screenshots / "demo.png", full_page=True)
            browser.close()
    finally:
        app.close()
    assert titles[0] == "Untuned base model"
    assert titles[1] == client.get_run(best.run_id).info.run_name
    # Greedy, with the run's generation settings but the UI's max_new_tokens (48).
    assert texts[1].startswith(best.samples[0].tuned)
    assert texts[0] != texts[1]


def test_the_generate_button_is_wired_to_the_picked_adapter_prompt_and_settings(store):
    """Without a browser: the Blocks built on the store, the button's function called with what
    its inputs hold as the page opens (the best run picked) and the best run's prompt typed."""
    client, best, _ = store
    app = demo.build(client, "peftlab")
    (click,) = [fn for fn in app.fns.values() if fn.name == "generate"]
    values = [component.value for component in click.inputs]
    assert values[0] == [best.run_id]  # the best run, picked
    prompt = [i for i, component in enumerate(click.inputs) if component.label == "Prompt"]
    assert prompt == [1]
    values[1] = best.samples[0].prompt
    page = click.fn(*values)
    assert [component.__class__.__name__ for component in click.outputs] == ["HTML"]
    titles = re.findall(r"<h3>(.*?)</h3>", page)
    assert titles == ["Untuned base model", client.get_run(best.run_id).info.run_name]
    texts = [html.unescape(text) for text in re.findall(r'pre-wrap">(.*?)</p>', page, re.S)]
    assert texts[1].startswith(best.samples[0].tuned)  # greedy, max_new_tokens from the page
    assert click.fn([], "x", *values[2:]) == "<p>Pick at least one tuned adapter.</p>"


def test_demo_command_builds_the_experiment_named_and_serves_on_the_port(tmp_path, monkeypatch):
    calls = []

    class App:
        def launch(self, **where):
            calls.append(("launch", where))

    def build(client, experiment):
        calls.append(("build", experiment))
        return App()

    monkeypatch.setattr(demo, "build", build)
    result = peftlab("demo", "--port", "8765", "--experiment", "my-experiment", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert calls == [("build", "my-experiment"),
                     ("launch", {"server_name": "127.0.0.1", "server_port": 8765})]  # fmt: skip
