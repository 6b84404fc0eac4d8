"""grpo-lite and TRL on a CUDA GPU: Qwen2.5-0.5B/1.5B-Instruct in 4-bit + LoRA, G = 8, 256/512 tokens.

    python benchmarks/gpu.py [--runs "0.5b:256:merged,16bit,before,trl;1.5b:512:lean,merged"]
                             [--steps 2] [--rollouts N] [--budget-s S] [--json PATH]

Each run (model : new tokens : what to run) starts one fresh process per grpo-lite variant and for
TRL (``trl``). The default plan took about 400 s on an H200 (the sum of its parts as measured in
benchmarks/RESULTS.md), inside the 8 minutes one command may take; ``--budget-s`` (default 420)
starts no new process after that many seconds, whatever the plan. For each process: peak
VRAM (``torch.cuda.max_memory_allocated``), generated tokens per second, and seconds per step
split into generate / reference / policy (forward + backward) / optimizer; the memory planner's
estimate beside the measured peak. The grpo-lite variants (``VARIANTS``), each adding one change:
``before`` (the fp32 residual stream that peft's k-bit preparation leaves, transformers'
``generate`` on the 4-bit adapter model), ``16bit`` (embeddings, norms, head, activations and KV
cache in the 16-bit compute dtype), ``lean`` (+ grpo-lite's decode loop and sampler), ``merged``
(+ sampling from the merged 16-bit copy: today's default where it fits), ``compiled`` (+
``compile_rollouts``: static KV cache, compiled decode step, CUDA graphs). ``--rollouts N``
also times rollouts alone for N prompts x G (one process per model: adapter with ``generate``, the
lean loop without and with the shared prefill, merged; then ``decode_extras.py``'s roads on the
merged copy: compiled step vs lean loop at full length, and with lengths that differ (EOS rate
2 / tokens) finished rows kept, dropped, or in a compiled static batch). Both trainers run the same settings (``SETTINGS`` below, mapped to TRL by
``grpo_lite.apps.scale_out.trl_args``; both use bitsandbytes' paged 8-bit AdamW), on GSM8K-style chat
prompts, with beta = 0.04 so that the reference pass (base = adapters off) is part of every step,
and with a dense reward (the share of digits in a completion), so that no group ties and
grpo-lite's zero-advantage skipping never applies: every completion is trained on by both.

Where the Hugging Face Hub can't be reached (or with ``--random-weights``), each model is built
from its real config (the shapes of ``Qwen/Qwen2.5-*-Instruct``) with random weights and a
character-level tokenizer padded to the real vocabulary: the same memory and arithmetic per token,
but every completion runs to the full length. The JSON and the printed table say which was used.
Without CUDA the script stops: this benchmark is for a GPU (``compare_trl.py`` runs anywhere).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_table import table  # noqa: E402
from runners import machine, peak_memory_mb, run_grpo_lite, run_trl, step_parts, versions  # noqa: E402

# The shapes of Qwen/Qwen2.5-{0.5B,1.5B}-Instruct's config.json.
QWEN = {
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
}  # fmt: skip
# A tiny shape of the same family, only for a smoke run of this script on the CPU (tests).
QWEN["tiny"] = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=128, vocab_size=4096, tie_word_embeddings=True)  # fmt: skip
HUB_ID = {"0.5b": "Qwen/Qwen2.5-0.5B-Instruct", "1.5b": "Qwen/Qwen2.5-1.5B-Instruct", "tiny": "tiny-qwen2",
          "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # fmt: skip
# ``smollm2``: the real SmolLM2-135M-Instruct, offline (grpo_lite.policy.offline: Q4_1 weights dequantized).
MODELS = (*QWEN, "smollm2")
SETTINGS = dict(
    prompts_per_step=2,
    group_size=8,
    micro_batch_size=8,
    max_prompt_tokens=256,
    temperature=1.0,
    learning_rate=1e-5,
    lora_rank=16,
    lora_alpha=32,
    beta=0.04,
    loss_type="grpo",
    load_in_4bit=True,
    gradient_checkpointing=True,
    save_steps=0,
    seed=0,
)
QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. Her "
    "parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. "
    "How much more money does Betty need to buy the wallet?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
]
SYSTEM = (
    "Think step by step inside <think>...</think>, then give the final number inside <answer>...</answer>."
)


def gsm8k_style_rows() -> list[dict[str, Any]]:
    return [
        {"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]}
        for q in QUESTIONS * 8
    ]


def digit_share(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
    """Dense benchmark reward: the share of digits in the completion's text."""
    from rewards import completion_text

    texts = [completion_text(c) for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def random_weights_model(size: str, folder: Path) -> Path:
    """The real config of Qwen2.5-{size} with random weights and a char tokenizer of the same vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from grpo_lite.policy.tiny import build_char_tokenizer

    path = folder / f"qwen2.5-{size}-random"
    if (path / "config.json").exists():
        return path
    shape = QWEN[size]
    tokenizer = build_char_tokenizer(extra_tokens=shape["vocab_size"] - len(build_char_tokenizer()))
    config = Qwen2Config(**shape, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None, max_position_embeddings=4096)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(
        "cuda" if torch.cuda.is_available() else "cpu"
    ):  # random init of 1.5B: seconds on a GPU
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def resolve_model(size: str, folder: Path, random_weights: bool) -> tuple[str, str]:
    """(model path or id, "hub" | "random weights, real config" | the offline SmolLM2's note)."""
    if size == "smollm2":
        from grpo_lite.policy.offline import SMOLLM2, WEIGHTS_NOTE
        from grpo_lite.policy.offline import resolve_model as offline_model

        return offline_model(SMOLLM2), WEIGHTS_NOTE
    if not random_weights and size != "tiny":
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(HUB_ID[size]), "hub"
        except Exception as err:  # offline, no Hub: fall back to the real shapes
            print(f"  {HUB_ID[size]} not reachable ({type(err).__name__}); using random weights of its shape")
    return str(random_weights_model(size, folder)), "random weights, real config"


DEFAULT_RUNS = "0.5b:256:merged,16bit,before,trl;1.5b:512:lean,merged"
# Each grpo-lite variant adds one change to the one before; "fp32_stream" rebuilds the path before it.
VARIANTS: dict[str, dict[str, Any]] = {
    "before": {"sampler": "transformers", "rollout_weights": "adapter", "fp32_stream": True},
    "16bit": {"sampler": "transformers", "rollout_weights": "adapter"},
    "lean": {"sampler": "grpo_lite", "rollout_weights": "adapter"},
    "merged": {"sampler": "grpo_lite", "rollout_weights": "merged"},
    "compiled": {"sampler": "grpo_lite", "rollout_weights": "merged", "compile_rollouts": True},
}


def planned_peak_gb(model: Any, max_new_tokens: int, rollout_weights: str = "adapter") -> float:
    from grpo_lite.policy.memory import CUDA_CONTEXT_GB, plan_memory

    plan = plan_memory(
        model, group_size=SETTINGS["group_size"], max_new_tokens=max_new_tokens,
        prompt_len=SETTINGS["max_prompt_tokens"], lora_rank=SETTINGS["lora_rank"], load_in_4bit=True,
        micro_batch=SETTINGS["micro_batch_size"], prompts_per_step=SETTINGS["prompts_per_step"], gpu_gb=80,
        rollout_weights=rollout_weights,
    )  # fmt: skip
    return plan.peak_gb - CUDA_CONTEXT_GB  # max_memory_allocated does not see the CUDA context


def worker(impl: str, model: str, max_new_tokens: int, steps: int, out: Path, device: str) -> None:
    settings = SETTINGS | {"max_new_tokens": max_new_tokens, "device": device}
    with tempfile.TemporaryDirectory() as tmp:
        if impl == "trl":
            result = run_trl(model, settings, gsm8k_style_rows(), digit_share, steps, Path(tmp) / "run")
        else:
            variant = dict(VARIANTS[impl])
            fp32_stream = variant.pop("fp32_stream", False)
            result = run_grpo_lite(model, settings | variant, gsm8k_style_rows(), digit_share, steps,
                                   Path(tmp) / "run", fp32_stream=fp32_stream)  # fmt: skip
    result["peak_mem_mb"] = peak_memory_mb()  # CUDA max allocated; peak RSS in a CPU smoke run
    out.write_text(json.dumps(result))


def rollout_worker(
    model: str, prompts: int, max_new_tokens: int, out: Path, device: str, roads_wanted: str = "all"
) -> None:
    """Rollouts alone, B = ``prompts`` x G, every completion to ``max_new_tokens`` (random weights
    never sample the EOS): generated tokens per second of each sampling road, best of 2 after a
    short warm-up, in one process on one loaded 16-bit policy."""
    import time

    import torch
    from decode_extras import extra_roads

    from grpo_lite import GRPOConfig
    from grpo_lite.policy.model import load_policy
    from grpo_lite.rollout import Sampling, encode_prompts, render_prompt
    from grpo_lite.rollout.decode import decode
    from grpo_lite.rollout.generate import _eos_ids, _transformers_generate
    from grpo_lite.rollout.weights import make_rollout_weights

    cfg = GRPOConfig(model=model, output_dir=str(out.parent), device=device, **SETTINGS)
    policy, tok = load_policy(cfg)
    dtype = policy.get_base_model().get_input_embeddings().weight.dtype
    texts = [render_prompt(r["prompt"], tok) for r in gsm8k_style_rows()[:prompts]]
    ids, mask = encode_prompts(texts, tok, max_prompt_tokens=256, chat=[True] * len(texts))
    ids, mask = ids.to(policy.device), mask.to(policy.device)
    G, eos = SETTINGS["group_size"], _eos_ids(policy, tok)
    merged = make_rollout_weights(policy, choice="merged", dtype=dtype)

    def lean(model: Any, T: int, share: bool = True) -> torch.Tensor:
        return decode(model, ids, mask, group_size=G, max_new_tokens=T, temperature=1.0, top_k=0, top_p=1.0,
                      eos_ids=eos, pad_id=tok.pad_token_id, share_prefill=share)  # fmt: skip

    def hf(model: Any, T: int) -> torch.Tensor:
        return _transformers_generate(model, tok, ids, mask, group_size=G, sampling=Sampling(1.0, 1.0, 0, T),
                                      eos_ids=eos, stop_strings=())  # fmt: skip

    roads = {
        "adapter, transformers generate": lambda T: hf(policy, T),
        "adapter, lean loop, no shared prefill": lambda T: lean(policy, T, share=False),
        "adapter, lean loop": lambda T: lean(policy, T),
        "merged, transformers generate": lambda T: hf(merged.current(), T),
        "merged, lean loop": lambda T: lean(merged.current(), T),
    }
    policy.eval()
    result: dict[str, Any] = {"prompts": prompts, "group_size": G, "max_new_tokens": max_new_tokens}
    for name, run in roads.items() if roads_wanted == "all" else ():
        run(8)  # warm-up: allocator, kernels
        times = []
        for _ in range(2):
            _sync_device()
            t0 = time.perf_counter()
            tokens = run(max_new_tokens)
            _sync_device()
            times.append(time.perf_counter() - t0)
        result[name] = {"seconds": min(times), "tokens": int(tokens.numel()),
                        "tokens_per_sec": tokens.numel() / min(times)}  # fmt: skip
        print(f"    {name}: {result[name]['tokens_per_sec']:.0f} tokens/s", flush=True)
    # the decode loop's extras on the merged copy: compiled step + static cache, finished rows dropped
    result |= extra_roads(merged.current(), ids, mask, group_size=G, eos_ids=eos, pad_id=tok.pad_token_id,
                          tokens=max_new_tokens, eos_rate=2 / max_new_tokens, log=lambda m: print(m, flush=True))  # fmt: skip
    result["merged copy GB"] = merged.copy_bytes / 2**30
    result["peak_mem_mb"] = peak_memory_mb()
    out.write_text(json.dumps(result))


def _sync_device() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=DEFAULT_RUNS,
                   help=f"MODEL:TOKENS:WHAT[,WHAT...] separated by ';', WHAT in {[*VARIANTS, 'trl']} "
                        "(default: %(default)s)")  # fmt: skip
    p.add_argument("--steps", type=int, default=2, help="steps per process; the first is warm-up (default 2)")
    p.add_argument("--rollouts", type=int, default=0, metavar="N",
                   help="also time rollouts alone for N prompts x G, each model at its first tokens (0: skip)")  # fmt: skip
    p.add_argument("--rollout-roads", choices=["all", "extras"], default="all",
                   help="extras: only decode_extras.py's roads (compiled step, finished rows) in --rollouts")  # fmt: skip
    p.add_argument("--budget-s", type=float, default=420,
                   help="start no new process after this many seconds (0: none; default %(default)s)")  # fmt: skip
    p.add_argument("--random-weights", action="store_true", help="do not try the Hub")
    p.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "grpo-lite-gpu-bench")
    p.add_argument(
        "--json", type=Path, default=None, help="written after every run, so a cut run keeps its rows"
    )
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: a smoke run of this script (with --runs tiny:...), not a benchmark")  # fmt: skip
    p.add_argument("--worker", nargs=3, metavar=("IMPL", "MODEL", "TOKENS"), help=argparse.SUPPRESS)
    p.add_argument(
        "--rollout-worker", nargs=3, metavar=("MODEL", "PROMPTS", "TOKENS"), help=argparse.SUPPRESS
    )
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = _parser().parse_args(argv)
    if a.worker:
        worker(a.worker[0], a.worker[1], int(a.worker[2]), a.steps, a.out, a.device)
        return {}
    if a.rollout_worker:
        rollout_worker(
            a.rollout_worker[0],
            int(a.rollout_worker[1]),
            int(a.rollout_worker[2]),
            a.out,
            a.device,
            a.rollout_roads,
        )
        return {}
    import time

    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU; on a CPU run benchmarks/compare_trl.py instead")
    plan = parse_runs(a.runs)
    a.model_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result: dict[str, Any] = {"machine": machine(), "versions": versions(), "settings": SETTINGS,
                              "steps": a.steps, "rows": [], "rollouts": []}  # fmt: skip

    def over_budget(what: str) -> bool:
        if a.budget_s and time.perf_counter() - start > a.budget_s:
            print(f"  {what}: skipped (past --budget-s {a.budget_s:g} s)", flush=True)
            return True
        return False

    def save() -> None:
        if a.json:
            a.json.write_text(json.dumps(result, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        models: dict[str, tuple[str, str]] = {}
        for size, tokens, impls in plan:
            if size not in models:
                models[size] = resolve_model(size, a.model_dir, a.random_weights)
                if a.rollouts and not over_budget(f"rollouts {size}"):
                    result["rollouts"].append(_rollouts(size, *models[size], tokens, a, Path(tmp)))
                    save()
            model, source = models[size]
            row: dict[str, Any] = {"model": HUB_ID[size], "source": source, "max_new_tokens": tokens,
                                   "planned_peak_gb": planned_peak_gb(model, tokens),
                                   "planned_peak_gb_merged": planned_peak_gb(model, tokens, "merged")}  # fmt: skip
            result["rows"].append(row)
            for impl in impls:
                if not over_budget(f"{impl} {size} {tokens}"):
                    row[impl] = _train_run(impl, size, model, tokens, a, Path(tmp))
                    save()
    result["seconds"] = time.perf_counter() - start
    print(table(result, list(VARIANTS)))
    save()
    return result


def parse_runs(spec: str) -> list[tuple[str, int, list[str]]]:
    """``"0.5b:256:merged,trl;1.5b:512:lean"`` -> [("0.5b", 256, ["merged", "trl"]), ("1.5b", 512, ["lean"])]."""
    plan = []
    for part in (p.strip() for p in spec.split(";") if p.strip()):
        try:
            size, tokens, what = part.split(":")
            impls = [w for w in what.split(",") if w]
            plan.append((size, int(tokens), impls))
        except ValueError:
            sys.exit(f"--runs: {part!r} is not MODEL:TOKENS:WHAT[,WHAT...]")
        unknown = sorted({size} - set(MODELS)) + sorted(set(impls) - {*VARIANTS, "trl"})
        if unknown:
            sys.exit(f"--runs: unknown {unknown}; models {list(MODELS)}, runs {[*VARIANTS, 'trl']}")
    return plan


def _train_run(impl: str, size: str, model: str, tokens: int, a: Any, tmp: Path) -> dict[str, Any]:
    """One trainer or variant in a fresh process: its step parts, or the error it ended with."""
    out = tmp / f"{impl}-{size}-{tokens}.json"
    proc = _run([sys.executable, __file__, "--worker", impl, model, str(tokens), "--steps", str(a.steps),
                 "--device", a.device, "--out", str(out)])  # fmt: skip
    if proc.returncode:
        print(f"  {impl} {size} {tokens}: FAILED\n{proc.stderr[-2000:]}", flush=True)
        return {"error": proc.stderr[-2000:]}
    m = step_parts(json.loads(out.read_text()))
    print(f"  {impl:9s} {size} x {tokens} tokens: {m['step_seconds_median']:.2f} s/step, "
          f"{m['gen_tokens_per_sec']:.0f} tokens/s, {m['peak_mem_mb'] / 1024:.2f} GB", flush=True)  # fmt: skip
    return m


def _rollouts(size: str, model: str, source: str, tokens: int, a: Any, tmp: Path) -> dict[str, Any]:
    out = tmp / f"rollouts-{size}.json"
    proc = _run([sys.executable, __file__, "--rollout-worker", model, str(a.rollouts), str(tokens),
                 "--rollout-roads", a.rollout_roads,
                 "--device", a.device, "--out", str(out)])  # fmt: skip
    entry = {"model": HUB_ID[size], "source": source}
    return entry | (json.loads(out.read_text()) if proc.returncode == 0 else {"error": proc.stderr[-2000:]})


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


if __name__ == "__main__":
    main()
