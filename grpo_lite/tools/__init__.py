"""Tools the model calls mid-answer: schemas, the built-in ``python`` tool, call formats, the tool box.

- ``box.py``      ``ToolBox``: tools by name, schemas (transformers' ``get_json_schema``), every call
                  of a step run in parallel with a time limit; failures become the tool's answer
- ``python.py``   the built-in ``python`` tool: the model's code runs in ``rewards``' sandbox
- ``formats.py``  where a call starts and ends (``hermes``: ``<tool_call>``; ``plain``: a fenced
                  python block) and how an answer is written back (the chat template's tool message)

The decode loop that stops at a call and goes on after its answer is ``rollout/turns.py``; it knows
tools only through a ``ToolBox`` and a format handed to it.
"""

from collections.abc import Callable, Sequence
from typing import Any

from grpo_lite.tools.box import BUILTIN, ToolBox, ToolResult, bounded
from grpo_lite.tools.formats import Hermes, Plain, ToolCall, tool_format
from grpo_lite.tools.python import python

PLAIN_PROMPT = (
    "You can run Python: write a ```python code block and it runs; its output comes back in an "
    "```output block. Then give the answer."
)
"""A sentence to put in a prompt for ``tool_format="plain"`` (models without a tool-calling template)."""

__all__ = ["BUILTIN", "PLAIN_PROMPT", "Hermes", "Plain", "ToolBox", "ToolCall", "ToolResult", "bounded",
           "python", "tool_format", "tool_use"]  # fmt: skip


def tool_use(
    names: Sequence[str], functions: Sequence[Callable[..., Any] | str], cfg: Any, tokenizer: Any
) -> Any:
    """The run's tools (``cfg.tools`` built-ins and ``functions``), their format and limits, for the
    rollout (``rollout.turns.ToolUse``); None when there are none."""
    from grpo_lite.rollout.turns import ToolUse

    tools = [*names, *functions]
    if not tools:
        return None
    if cfg.sampler != "grpo_lite":
        raise ValueError(
            "GRPOConfig.sampler must be 'grpo_lite' when tools are on (the tool loop is grpo-lite's)"
        )
    box = ToolBox(tools, timeout=cfg.tool_timeout, output_chars=cfg.tool_output_chars)
    return ToolUse(box, tool_format(cfg.tool_format, tokenizer))
