"""Gradio app: pick tuned adapters from MLflow runs, type a prompt, compare with the base model."""

from __future__ import annotations

import os
from html import escape

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline box

import gradio as gr  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from peftlab import adapter_sources, compare, names  # noqa: E402
from peftlab.adapters import AdapterBank  # noqa: E402
from peftlab.config import GenerationSettings  # noqa: E402
from peftlab.errors import PeftlabError  # noqa: E402

DEFAULTS = GenerationSettings()  # a run's own generation settings, the sliders' start


def adapter_runs(client: MlflowClient, experiment: str) -> list[Run]:
    """FINISHED training runs of ``experiment`` that logged an adapter, best eval loss first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id], "attributes.status = 'FINISHED'", order_by=["metrics.eval_loss ASC"]
    )
    return [
        run
        for run in runs
        if names.SWEEP_TAG not in run.data.tags
        and client.list_artifacts(run.info.run_id, names.ADAPTER_DIR)
    ]


def run_labels(runs: list[Run]) -> list[str]:
    """Each run by its method and the params that tell it from the other runs listed: those
    whose values differ among the runs that have them (a key of one method alone is implied
    by the method's name)."""
    differing = [
        key
        for key in compare.differing_params(runs)
        if key != compare.METHOD
        and len({run.data.params[key] for run in runs if key in run.data.params}) > 1
    ]
    labels = []
    for run in runs:
        params, loss = run.data.params, run.data.metrics.get(names.EVAL_LOSS, float("nan"))
        settings = [f"{key}={params[key]}" for key in differing if key in params]
        labels.append(
            " · ".join(
                [
                    f"{params.get(compare.METHOD)} ({run.info.run_id[:8]})",
                    *settings,
                    f"eval_loss {loss:.3f}",
                ]
            )
        )
    return labels


def empty_message(experiment: str) -> str:
    return (
        f"No finished runs with an adapter in the MLflow experiment **{experiment}** yet. "
        "Train one with `make train` (or `python train.py`), then restart `peftlab demo`."
    )


class Generator:
    """Keeps one AdapterBank per base model, adapters attached as runs get picked."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self.banks: dict[str, AdapterBank] = {}
        self.sources: dict[str, adapter_sources.AdapterSource] = {}

    def source(self, run_id: str) -> adapter_sources.AdapterSource:
        if run_id not in self.sources:
            run = self.client.get_run(run_id)
            self.sources[run_id] = adapter_sources.from_run(run, self.client)
        return self.sources[run_id]

    def outputs(
        self, run_ids: list[str], prompt: str, settings: GenerationSettings
    ) -> list[tuple[str, str]]:
        sources = [self.source(run_id) for run_id in run_ids]
        if len({s.base for s in sources}) > 1:
            raise PeftlabError("the selected runs tuned different base models: pick runs of one")
        base = sources[0].base
        if base not in self.banks:
            self.banks[base] = AdapterBank(sources[0].model, base)
        bank = self.banks[base]
        # A task run's template makes its prompt of what was typed; the base model gets the
        # first run's prompt, so that the two answer the same text.
        prompts = [source.prompt_for(prompt, bank.loaded.tokenizer) for source in sources]
        results = [("Untuned base model", bank.generate(prompts[0], settings))]
        for source, made in zip(sources, prompts, strict=True):
            bank.add(source)
            results.append((source.label, bank.generate(made, settings, source.name)))
        return results


def render(outputs: list[tuple[str, str]]) -> str:
    return "".join(
        f'<div class="peftlab-output"><h3>{escape(title)}</h3>'
        f'<p style="white-space: pre-wrap">{escape(text) or "(empty)"}</p></div>'
        for title, text in outputs
    )


def build(client: MlflowClient, experiment: str) -> gr.Blocks:
    runs = adapter_runs(client, experiment)
    generator = Generator(client)

    def generate(run_ids, prompt, max_new_tokens, repetition_penalty, do_sample, temp, top_p):
        if not run_ids:
            return "<p>Pick at least one tuned adapter.</p>"
        if not prompt.strip():
            return "<p>Type a prompt.</p>"
        settings = GenerationSettings(
            max_new_tokens=int(max_new_tokens),
            repetition_penalty=repetition_penalty,
            do_sample=do_sample,
            temperature=temp,
            top_p=top_p,
        )
        try:
            return render(generator.outputs(run_ids, prompt, settings))
        except PeftlabError as error:
            return f"<p>{escape(str(error))}</p>"

    with gr.Blocks(title="peftlab demo", analytics_enabled=False) as app:
        gr.Markdown(f"# peftlab: tuned adapters\nExperiment **{escape(experiment)}**")
        if not runs:
            gr.Markdown(empty_message(experiment))
            return app
        choices = list(zip(run_labels(runs), [run.info.run_id for run in runs], strict=True))
        picked = gr.CheckboxGroup(choices, value=[choices[0][1]], label="Tuned adapters (runs)")
        prompt = gr.Textbox(label="Prompt", value=DEFAULTS.prompts[0], lines=2)
        gr.Markdown(
            "For a task run, type its input (a role, say): the run's own template makes the "
            "prompt; several inputs as `NAME=VALUE` lines."
        )
        gr.Examples([[p] for p in DEFAULTS.prompts], inputs=prompt)
        with gr.Accordion("Generation settings", open=False):
            knobs = generation_knobs()
        button = gr.Button("Generate", variant="primary")
        output = gr.HTML()
        button.click(generate, inputs=[picked, prompt, *knobs], outputs=output)
    return app


def generation_knobs() -> list[gr.components.Component]:
    """max_new_tokens, repetition_penalty, do_sample, temperature, top_p: at a run's defaults."""
    return [
        gr.Slider(1, 256, value=DEFAULTS.max_new_tokens, step=1, label="max_new_tokens"),
        gr.Slider(
            1.0, 2.0, value=DEFAULTS.repetition_penalty, step=0.05, label="repetition_penalty"
        ),
        gr.Checkbox(value=DEFAULTS.do_sample, label="do_sample (else greedy)"),
        gr.Slider(0.1, 2.0, value=DEFAULTS.temperature, step=0.05, label="temperature"),
        gr.Slider(0.05, 1.0, value=DEFAULTS.top_p, step=0.05, label="top_p"),
    ]
