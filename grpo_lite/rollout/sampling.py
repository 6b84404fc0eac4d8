"""The sampling settings in force: read fresh at every rollout, changed by steering between steps."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from grpo_lite.config import SAMPLING_RULES


@dataclass
class Sampling:
    """Sampling settings read fresh at every rollout; the notebook and callbacks may change them."""

    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    max_tool_calls: int = 0  # tool calls per completion (runs with tools only)

    @classmethod
    def of(cls, cfg: Any) -> Sampling:
        """The settings a ``GRPOConfig`` starts a run with."""
        return cls(cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens, cfg.max_tool_calls)

    def check(self) -> None:
        """The config's rules (``config.SAMPLING_RULES``), for a change requested mid-run."""
        for name, (ok, allowed) in SAMPLING_RULES.items():
            if not ok(getattr(self, name)):
                raise ValueError(f"{name} must be {allowed}; got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
