"""Where a tool call starts and ends in what the model writes, and how a tool's answer is written back.

Two formats:

- ``hermes``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, the format of Qwen2.5,
  Qwen3, Hermes and SmolLM3 chat templates (the tool schemas go into the prompt through the chat
  template's ``tools=``); the answer is rendered as the chat template renders a ``tool`` message.
- ``plain``: for models without a tool-calling template (SmolLM2): a fenced ```python block is a call
  of the ``python`` tool; its output comes back in a fenced ```output block.

``"auto"`` picks ``hermes`` when the chat template knows ``<tool_call>``, else ``plain``.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

_MARK = "\u2063grpo-lite-cut\u2063"  # an assistant message's text, to cut the rendered template after it


@dataclass
class ToolCall:
    """One parsed call: the tool's name and arguments, or why it could not be parsed."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a malformed call: said to the model instead of running anything


class Hermes:
    """``<tool_call>{"name": "python", "arguments": {"code": "..."}}</tool_call>``."""

    name = "hermes"
    stop_strings = ("</tool_call>",)
    _call = re.compile(r"<tool_call>(.*?)</tool_call>\s*$", re.DOTALL)

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def parse(self, text: str) -> ToolCall | None:
        """The call that ``text`` ends with, or None when it does not end with a complete call."""
        m = self._call.search(text)
        if m is None:
            return None
        try:
            data = json.loads(m.group(1))
        except json.JSONDecodeError as err:
            return ToolCall("?", error=f"the tool call is not valid JSON ({err.msg} at character {err.pos})")
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return ToolCall("?", error='a tool call must be {"name": ..., "arguments": {...}}')
        arguments = data.get("arguments", {})
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            with contextlib.suppress(json.JSONDecodeError):
                arguments = json.loads(arguments)
        if not isinstance(arguments, dict):
            return ToolCall(data["name"], error="the tool call's arguments must be a JSON object")
        return ToolCall(data["name"], arguments)

    def render(self, call: ToolCall, output: str) -> str:
        """What follows the model's call: the chat template's rendering of the tool message, up to and
        including the next assistant turn's opening."""
        messages = [
            {"role": "user", "content": "-"},
            {"role": "assistant", "content": _MARK},
            {"role": "tool", "name": call.name, "content": output},
        ]
        text = str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return text[text.index(_MARK) + len(_MARK) :]


class Plain:
    """A fenced ```python block is a call of ``python``; the output comes back in a fenced ```output
    block, and the model goes on writing."""

    name = "plain"
    stop_strings = ("```",)
    _open = re.compile(r"```(?:python|py)[ \t]*\n")

    def __init__(self, tokenizer: Any = None) -> None:
        self.tokenizer = tokenizer

    def parse(self, text: str) -> ToolCall | None:
        """The python block that ``text`` ends with (its closing fence last), or None."""
        text = text.rstrip(" \t")
        if not text.endswith("```"):
            return None
        openings = list(self._open.finditer(text, 0, len(text) - 3))
        opening = openings[-1] if openings else None
        if opening is None or "```" in text[opening.end() : -3]:  # this fence closed another block
            return None
        return ToolCall("python", {"code": text[opening.end() : -3]})

    def render(self, call: ToolCall, output: str) -> str:
        return f"\n```output\n{output}{'' if output.endswith(chr(10)) or not output else chr(10)}```\n"


FORMATS = {"hermes": Hermes, "plain": Plain}


def tool_format(name: str, tokenizer: Any) -> Hermes | Plain:
    """The format ``name`` (``"auto"``, ``"hermes"``, ``"plain"``) for this tokenizer."""
    if name == "auto":
        template = getattr(tokenizer, "chat_template", None) or ""
        name = "hermes" if "<tool_call>" in str(template) else "plain"
    if name == "hermes" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("tool_format='hermes' needs a chat template that renders tool messages")
    return FORMATS[name](tokenizer)
