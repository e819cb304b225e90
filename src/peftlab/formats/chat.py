"""``dataset.format=chat``: conversations, lists of ``{role, content}`` messages
(``dataset.messages_column``), rendered with the tokenizer's own chat template.

The model learns every assistant message (with the template's end-of-turn). Each message's
place in the rendered text is found by rendering the conversation up to it: what the template
adds before an assistant message (``add_generation_prompt``) is read, not written. The last
message is the assistant's answer the held-out generations are scored against.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftlab.config import setting
from peftlab.errors import PeftlabError
from peftlab.formats.base import BadRow, DataFormat, Example, Segment, is_empty, register

ROLES = ("system", "user", "assistant")


@dataclass(unsafe_hash=True)
class ChatKeys:
    messages_column: str = setting("messages", "format=chat: the column of {role, content} lists")


@register
class Chat(DataFormat):
    name = "chat"
    has_prompt = True
    keys = ChatKeys

    def columns(self) -> list[tuple[str, str]]:
        return [("dataset.messages_column", self.cfg.messages_column)]

    def example(self, row) -> Example | None:
        column = self.cfg.messages_column
        value = row[column]
        if not isinstance(value, list) and is_empty(value):
            return None
        messages = [message_of(m, column) for m in as_list(value, column)]
        if not messages or messages[-1]["role"] != "assistant":
            raise BadRow(
                f"dataset.messages_column={column!r}: the last message is not the assistant's "
                "(the answer to learn and score)"
            )
        return Example({column: messages}, messages[-1]["content"])

    def check_tokenizer(self, tokenizer) -> None:
        if not tokenizer.chat_template:
            raise PeftlabError(
                f"dataset.format=chat: the tokenizer of {tokenizer.name_or_path} has no chat "
                "template; use a chat model's tokenizer, or dataset.format=completion"
            )

    def prompt(self, example, tokenizer) -> str:
        messages = example.fields[self.cfg.messages_column]
        return render(tokenizer, messages[:-1], add_generation_prompt=True)

    def inputs(self) -> list[str]:
        return ["user"]

    def prompt_from(self, values, tokenizer) -> str:
        self.require_inputs(values)
        self.check_tokenizer(tokenizer)
        message = {"role": "user", "content": values["user"]}
        return render(tokenizer, [message], add_generation_prompt=True)

    def segments(self, example, tokenizer) -> list[Segment]:
        messages = example.fields[self.cfg.messages_column]
        segments, done = [], ""
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = render(tokenizer, messages[:i], add_generation_prompt=True)
            after = render(tokenizer, messages[: i + 1])
            if not (before.startswith(done) and after.startswith(before)):
                raise PeftlabError(
                    f"dataset.format=chat: the chat template of {tokenizer.name_or_path} does "
                    "not render a conversation as the text before it plus the new message; "
                    "use dataset.format=completion"
                )
            segments += [Segment(before[len(done) :], False), Segment(after[len(before) :], True)]
            done = after
        return [s for s in segments if s.text]


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def as_list(value, column: str) -> list:
    if type(value).__name__ == "ndarray":  # Parquet lists arrive as numpy arrays
        value = value.tolist()
    if not isinstance(value, list):
        raise BadRow(
            f"dataset.messages_column={column!r} holds {type(value).__name__}, not a list of "
            "{role, content} messages"
        )
    return value


def message_of(message, column: str) -> dict:
    if not isinstance(message, dict) or not {"role", "content"} <= message.keys():
        raise BadRow(
            f"dataset.messages_column={column!r}: {str(message)[:60]!r} is not a "
            "{role, content} message"
        )
    if message["role"] not in ROLES:
        raise BadRow(
            f"dataset.messages_column={column!r}: role {message['role']!r} is not one of "
            f"{', '.join(ROLES)}"
        )
    if not isinstance(message["content"], str):
        raise BadRow(f"dataset.messages_column={column!r}: a message's content is not text")
    return {"role": message["role"], "content": message["content"]}
