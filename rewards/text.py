"""Getting the text to score out of a completion: a string, or a list of chat messages."""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> str:
    """The completion as text: itself if a string, else the content of the last assistant message."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                return str(message.get("content") or "")
        return ""
    raise TypeError(
        f"a completion must be a string or a list of chat messages; got {type(completion).__name__}"
    )
