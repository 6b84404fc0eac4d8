"""How completions are sampled: settings, prompts, the decode loop, the KV cache, the rollout weights.

- ``sampling.py``  ``Sampling``: temperature, top_p, top_k, max_new_tokens in force (steered live)
- ``prompts.py``   chat template, tokenizing and left-padding
- ``generate.py``  ``generate()``: G completions per prompt -> ``Rollout`` (ids, masks, truncation)
- ``decode.py``    the token loop: sampling rules, stop strings, finished rows leaving the batch
- ``cache.py``     the KV cache steps: dynamic cache with a shared prefill, static cache + compiled step
- ``weights.py``   what samples: the policy, or its merged 16-bit copy refreshed after each update

Nothing here imports the loss, the trainer or the run directory.
"""

from grpo_lite.rollout.generate import Rollout, completion_mask_and_truncation, generate
from grpo_lite.rollout.prompts import encode_prompts, is_chat, render_prompt
from grpo_lite.rollout.sampling import Sampling

__all__ = [
    "Rollout",
    "Sampling",
    "completion_mask_and_truncation",
    "encode_prompts",
    "generate",
    "is_chat",
    "render_prompt",
]
