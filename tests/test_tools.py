"""Tools mid-answer: call formats, the tool box, the python tool in the sandbox (under attack), the
decode loop with tools on the real SmolLM2, the tool mask in the loss, metrics, alarms, steering."""

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import torch

from grpo_lite.alarms import Alarm, check_alarms, remedy_for
from grpo_lite.apps.tool_demo import EXAMPLE
from grpo_lite.config import GRPOConfig
from grpo_lite.loss import grpo_loss
from grpo_lite.rollout.turns import decode_with_tools
from grpo_lite.tools import Hermes, Plain, ToolBox, ToolCall, tool_format

# The tool part of Qwen2.5-Instruct's chat template (its tools header abridged): what ``hermes`` renders.
QWEN_TOOLS_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}{%- for tool in tools %}"
    "{{- '\\n' }}{{- tool | tojson }}{%- endfor %}{{- '\\n</tools><|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or message.role == 'system' or message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != 'tool') %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}"
    "{%- if loop.last or (messages[loop.index0 + 1].role != 'tool') %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
FAST = dict(timeout=3.0, output_chars=400)


def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: the first factor.
        b: the second factor.
    """
    return a * b


# ---- call formats --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("```python\nprint(1)\n```", "print(1)\n"),
        ("Let me compute.\n```py\nx = 2\nx * 3\n```", "x = 2\nx * 3\n"),
        # the last block is the call; an earlier block and its output are history
        ("```python\na\n```\n```output\n1\n```\nand ```python\nb\n```", "b\n"),
        ("an opening fence ```", None),
        ("```python\na\n```\n```", None),  # a fence that opens a new block
        ("```\nplain fence\n```", None),  # not a python block
        ("```python\nno end yet\n", None),
    ],
)
def test_plain_format_finds_the_python_block_a_text_ends_with(text, code):
    call = Plain().parse(text)
    assert (call.arguments["code"] if call else None) == code
    if call:
        assert call.name == "python" and call.error is None


@pytest.mark.parametrize(
    ("text", "name", "arguments", "error"),
    [
        ('<tool_call>\n{"name": "multiply", "arguments": {"a": 2, "b": 3}}\n</tool_call>', "multiply",
         {"a": 2, "b": 3}, None),
        ('<tool_call>{"name": "multiply", "arguments": "{\\"a\\": 1, \\"b\\": 1}"}</tool_call>', "multiply",
         {"a": 1, "b": 1}, None),  # arguments written as a JSON string
        ("<tool_call>{name: multiply}</tool_call>", "?", {}, "not valid JSON"),
        ('<tool_call>["multiply"]</tool_call>', "?", {}, '{"name": ...'),
        ('<tool_call>{"name": "multiply", "arguments": [1, 2]}</tool_call>', "multiply", {}, "JSON object"),
    ],
)  # fmt: skip
def test_hermes_format_parses_calls_and_names_what_is_malformed(text, name, arguments, error):
    call = Hermes(None).parse("Sure. " + text)
    assert (call.name, call.arguments) == (name, arguments)
    assert (error is None and call.error is None) or (error in call.error)
    assert Hermes(None).parse(text + " and more") is None  # a call is complete only at the end


def test_hermes_renders_the_answer_as_the_chat_template_renders_a_tool_message(tiny_model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    tok.chat_template = QWEN_TOOLS_TEMPLATE
    assert tool_format("auto", tok).name == "plain"  # no <tool_call> in the template: plain
    tok.chat_template = QWEN_TOOLS_TEMPLATE + "{# <tool_call> #}"
    fmt = tool_format("auto", tok)
    assert fmt.name == "hermes"
    appended = fmt.render(ToolCall("multiply", {"a": 2, "b": 3}), "6")
    # what follows the model's call, up to the next assistant turn's opening, as Qwen2.5 writes it
    assert (
        appended
        == "<|im_end|>\n<|im_start|>user\n<tool_response>\n6\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(ValueError, match="chat template"):
        tool_format("hermes", type("NoTemplate", (), {"chat_template": None})())


# ---- the tool box ----------------------------------------------------------------------------------
def test_schemas_come_from_transformers_and_a_tool_without_docs_is_named():
    from transformers.utils import get_json_schema

    box = ToolBox(["python", multiply], **FAST)
    assert box.names == ["python", "multiply"]
    assert box.schemas[1] == get_json_schema(multiply)
    assert box.schemas[1]["function"]["parameters"]["properties"]["a"]["type"] == "integer"
    assert box.schemas[0]["function"]["parameters"]["required"] == ["code"]

    def undocumented(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="tool 'undocumented'.*docstring"):
        ToolBox([undocumented])
    with pytest.raises(ValueError, match="unknown built-in tool 'shell'"):
        ToolBox(["shell"])
    with pytest.raises(ValueError, match="two tools are named 'multiply'"):
        ToolBox([multiply, multiply])


def test_every_kind_of_bad_call_becomes_an_answer_marked_failed():
    def boom(x: int) -> int:
        """Fails.

        Args:
            x: anything.
        """
        raise ValueError(f"no {x}")

    box = ToolBox(["python", multiply, boom], **FAST)
    calls = [
        ToolCall("multiply", {"a": 6, "b": 7}),
        ToolCall("?", error="the tool call is not valid JSON (Expecting value at character 0)"),
        ToolCall("divide", {"a": 1}),
        ToolCall("multiply", {"a": 1}),
        ToolCall("multiply", {"a": 1, "b": 2, "c": 3}),
        ToolCall("boom", {"x": 5}),
        ToolCall("python", {"code": 5}),
    ]
    results = box.run(calls)
    assert [(r.output, r.failed) for r in results] == [
        ("42", False),
        ("Error: the tool call is not valid JSON (Expecting value at character 0)", True),
        ("Error: no tool named 'divide'; tools: python, multiply, boom", True),
        ("Error: wrong arguments for 'multiply': missing a required argument: 'b'", True),
        ("Error: wrong arguments for 'multiply': got an unexpected keyword argument 'c'", True),
        ("Error: ValueError: no 5", True),
        ("Error: wrong arguments for 'python': code must be a string", True),
    ]


def test_a_hanging_tool_costs_its_time_limit_not_the_run():
    release = threading.Event()

    def hang(x: int) -> str:
        """Never answers in time.

        Args:
            x: anything.
        """
        release.wait(60)
        return "late"

    box = ToolBox([hang, multiply], timeout=0.5, output_chars=100)
    start = time.perf_counter()
    results = box.run([ToolCall("hang", {"x": 1}), ToolCall("multiply", {"a": 2, "b": 2})])
    took = time.perf_counter() - start
    release.set()
    assert [(r.output, r.failed) for r in results] == [("Error: timed out after 0.5 s", True), ("4", False)]
    assert 0.5 <= took < 0.5 + 1.0


def test_the_python_tool_prints_shows_the_last_value_and_the_traceback():
    box = ToolBox(["python"], timeout=3.0, output_chars=200)
    codes = ["print(347 * 829)", "x = 6\nx * 7", "def f():\n    return 1 / 0\nf()", "while True:\n    pass",
             "print('a' * 1000)", "x = 1"]  # fmt: skip
    results = box.run([ToolCall("python", {"code": c}) for c in codes])
    out = [(r.output, r.failed) for r in results]
    assert out[0] == ("287663\n", False)
    assert out[1] == ("42\n", False)
    assert out[2][1] and out[2][0].startswith("Traceback (most recent call last):\n")
    assert (
        out[2][0].endswith("ZeroDivisionError: division by zero\n")
        and 'File "<code>", line 2, in f' in out[2][0]
    )
    assert "solution.py" not in out[2][0] and "harness" not in out[2][0]  # only the model's own lines
    assert out[3] == ("\nError: timed out after 3 s", True)
    assert out[4] == ("a" * 100 + "\n... [801 characters cut] ...\n" + "a" * 99 + "\n", False)
    assert out[5] == ("", False)
    assert results[3].seconds < 3.0 + 1.5


def test_sandboxed_calls_run_in_parallel():
    box = ToolBox(["python"], timeout=5.0, output_chars=100, workers=4)
    calls = [ToolCall("python", {"code": "import time\ntime.sleep(1)\nprint('done')"})] * 4
    start = time.perf_counter()
    results = box.run(calls)
    assert [r.output for r in results] == ["done\n"] * 4
    assert time.perf_counter() - start < 4 * 1.0  # one at a time would take 4 s of sleeping alone


# ---- the sandbox under attack, through the tool path -------------------------------------------------
def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _accepted(server: socket.socket) -> int:
    """Connections waiting on ``server`` (its accept times out when there are none)."""
    n = 0
    with contextlib.suppress(OSError):
        while True:
            server.accept()[0].close()
            n += 1
    time.sleep(0.2)  # a signal sent just before is delivered by now
    return n


def test_model_code_called_as_a_tool_reaches_nothing_of_the_trainer(tmp_path, monkeypatch):
    """Each probe reaches the trainer when run bare (the control); through the python tool it gets
    nothing, and the loop costs its time limit."""
    secret, marker = f"hf_secret_{os.urandom(6).hex()}", f"grpo-lite-sleeper-{os.urandom(4).hex()}"
    monkeypatch.setenv("HF_TOKEN", secret)
    token = tmp_path / "token"
    token.write_text(secret)
    outside = tmp_path / "written-by-the-model"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
    pid, port = os.getpid(), server.getsockname()[1]
    probes = {
        "environment": "import os\nprint(os.environ.get('HF_TOKEN'))",
        "trainer's environ": f"print(open('/proc/{pid}/environ').read())",
        "token file": f"print(open({str(token)!r}).read())",
        "write outside": f"open({str(outside)!r}, 'w').write('x')\nprint('{secret}'[:0] + 'wrote')",
        "signal the trainer": f"import os, signal\nos.kill({pid}, signal.SIGUSR1)\nprint('sent')",
        "socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')",
    }
    try:
        # the control: each probe, run bare as the trainer's child, does reach the trainer
        bare = {name: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
                for name, code in probes.items()}  # fmt: skip
        accepted_bare = _accepted(server)
        # (/proc/PID/environ holds the environment the trainer started with: its PATH at least)
        assert secret in bare["environment"].stdout and "PATH=" in bare["trainer's environ"].stdout
        assert secret in bare["token file"].stdout and outside.exists() and received and accepted_bare == 1
        outside.unlink()
        received.clear()
        # through the tool: nothing leaks, nothing is written, signalled or connected
        box = ToolBox(["python"], timeout=2.0, output_chars=2000, workers=4)
        sleeper = f"import subprocess\nsubprocess.Popen(['/bin/sh', '-c', 'sleep 300; echo {marker}'])\nprint('forked')"
        calls = [
            ToolCall("python", {"code": c}) for c in [*probes.values(), sleeper, "while True:\n    pass"]
        ]
        start = time.perf_counter()
        results = box.run(calls)
        took = time.perf_counter() - start
        accepted = _accepted(server)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        server.close()
    answers = dict(zip([*probes, "sleeper", "loop"], results, strict=True))
    assert all(secret not in r.output for r in results), [r.output for r in results]
    assert answers["environment"].output == "None\n"
    assert answers["trainer's environ"].failed and answers["token file"].failed and answers["socket"].failed
    assert not outside.exists() and received == [] and accepted == 0
    assert _processes_with(marker) == []  # the sleeper died with its sandbox
    assert answers["loop"].output.endswith("Error: timed out after 2 s") and answers["loop"].failed
    assert took < 2 * 2.0 + 2.0  # 8 calls on 4 workers: two rounds of at most the time limit


# ---- the decode loop with tools, on the real SmolLM2 ------------------------------------------------
@pytest.fixture(scope="module")
def smol(smollm2_cache):
    """SmolLM2-135M-Instruct in float32 (the session's converted copy) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_lite.policy.offline import SMOLLM2_VERSION

    path = smollm2_cache / SMOLLM2_VERSION
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32
    ).eval(), AutoTokenizer.from_pretrained(path)


def _tool_rollout(smol, *, max_tool_calls, max_new_tokens=56, seed=0, with_logps=False):
    from grpo_lite.rollout.prompts import encode_prompts

    model, tok = smol
    prompts = [f"{EXAMPLE}What is 514 * 902?\n", f"Hi. {EXAMPLE}What is 123 * 456?\n"]  # different lengths
    ids, mask = encode_prompts(prompts, tok, max_prompt_tokens=256, chat=[False, False])
    torch.manual_seed(seed)
    turns = decode_with_tools(
        model, ids, mask, group_size=4, max_new_tokens=max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
        eos_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, tokenizer=tok, stop_strings=("\nQuestion",),
        tool_format=Plain(tok), toolbox=ToolBox(["python"], **FAST), max_tool_calls=max_tool_calls,
        with_logps=with_logps,
    )  # fmt: skip
    return ids, mask, turns


class _AnswersAtOnce(ThreadPoolExecutor):
    """A pool whose answers are ready when ``submit`` returns (a call that fails to parse is answered
    that fast by the tool box): the loop must still feed the call's last token before the answer's."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


@pytest.mark.parametrize("answers", ["threads", "at-once"])
@pytest.mark.parametrize("max_new_tokens", [56, 40])
def test_the_loop_samples_exactly_the_logprobs_the_loss_scores(smol, monkeypatch, answers, max_new_tokens):
    """Tools' answers fed through the decode pass (positions counting the row's own tokens, gaps
    masked) give every token the model wrote the log-prob that the loss computes on the whole sequence,
    whenever the answers come back; no row writes past the budget (40 tokens: calls end near it)."""
    from grpo_lite.logprobs import completion_logprobs

    if answers == "at-once":
        monkeypatch.setattr("grpo_lite.rollout.turns.ThreadPoolExecutor", _AnswersAtOnce)
    model, tok = smol
    ids, mask, turns = _tool_rollout(smol, max_tool_calls=2, with_logps=True, max_new_tokens=max_new_tokens)
    assert int(turns.lengths.max()) <= max_new_tokens
    T = turns.completion_ids.shape[1]
    completion_mask = (torch.arange(T)[None] < turns.lengths[:, None]).long()
    loss_mask = completion_mask * (1 - turns.tool_mask)
    full = torch.cat([ids.repeat_interleave(4, 0), turns.completion_ids], 1)
    attn = torch.cat([mask.repeat_interleave(4, 0), completion_mask], 1)
    with torch.no_grad():
        scored, _ = completion_logprobs(model, full, attn, loss_mask, temperature=1.0)
    calls = [sum(m["role"] == "tool" for m in ex) for ex in turns.exchanges]
    assert sum(calls) >= 1 and int(turns.tool_mask.sum()) > 0  # the base calls the tool about half the time
    for i in range(8):
        mine = scored[i][loss_mask[i].bool()]
        assert len(mine) == len(turns.sampled_logps[i])
        torch.testing.assert_close(mine, torch.tensor(turns.sampled_logps[i]), atol=2e-4, rtol=0)
    # the tool mask covers exactly the rendered answers, and each answer is what the code printed
    from rewards.sandbox import Limits, run_code

    for i, exchange in enumerate(turns.exchanges):
        answers = [m for m in exchange if m["role"] == "tool"]
        rendered = "".join(Plain(tok).render(None, m["content"]) for m in answers)
        masked = tok.decode(turns.completion_ids[i][turns.tool_mask[i].bool()])
        assert masked == rendered or (turns.truncated[i] and rendered.startswith(masked))  # cut by the budget
        for before, answer in zip(exchange, exchange[1:], strict=False):
            if answer["role"] == "tool" and not answer["failed"]:
                code = Plain().parse(before["content"]).arguments["code"]
                assert answer["content"] == run_code(code, Limits(wall_seconds=3.0, cpu_seconds=3)).output


@pytest.mark.parametrize("max_tool_calls", [0, 1])
def test_max_tool_calls_bounds_the_calls_and_a_call_past_it_ends_the_answer(smol, max_tool_calls):
    _, tok = smol
    _, _, turns = _tool_rollout(smol, max_tool_calls=max_tool_calls, max_new_tokens=64)
    for i, exchange in enumerate(turns.exchanges):
        n = sum(m["role"] == "tool" for m in exchange)
        assert n <= max_tool_calls
        if max_tool_calls == 0:
            assert int(turns.tool_mask[i].sum()) == 0
        text = exchange[-1]["content"] if exchange[-1]["role"] == "assistant" else ""
        if Plain().parse(text) is not None:  # it ended on an unanswered call: not cut off by the budget
            assert n == max_tool_calls and not turns.truncated[i]
    assert int(turns.lengths.max()) <= 64
    if max_tool_calls == 0:  # the model wrote python blocks and none was run (seed 0 writes some)
        assert sum(Plain().parse(ex[-1]["content"]) is not None for ex in turns.exchanges) >= 1


class _SlowBox:
    """A tool box whose every answer takes ``seconds``: the other rows end while a call is out."""

    workers, seconds = 2, 0.4

    def call(self, call):
        from grpo_lite.tools.box import ToolResult

        time.sleep(self.seconds)
        return ToolResult(call.name, call.arguments, "1\n", False, self.seconds)


def test_a_row_that_ended_while_another_waits_for_its_tool_writes_nothing_more(smol, monkeypatch):
    """Scripted: row 0 writes a python call and waits for a slow tool; row 1 writes EOS meanwhile, so
    a step has nothing to feed and the loop waits. Row 1 must end at its EOS (the loop once let it
    sample again from spent logits, past the budget on CI); row 0 goes on after the answer."""
    from grpo_lite.rollout.prompts import encode_prompts

    model, tok = smol
    call = tok("```python\nprint(1)\n```", add_special_tokens=False)["input_ids"]
    eos, filler = tok.eos_token_id, tok(" so", add_special_tokens=False)["input_ids"][0]
    script = {0: call + [eos], 1: [filler] * len(call) + [eos]}  # row 1's EOS: the step after row 0's call
    written = {0: 0, 1: 0}  # tokens each row has been given, whether the loop kept them or not

    def scripted(logits, *, noise, **kw):
        out = []
        for i in range(logits.shape[0]):
            r = i if logits.shape[0] == 2 else 0  # row 1 leaves the batch first
            out.append(script[r][min(written[r], len(script[r]) - 1)])
        return torch.tensor(out)

    from grpo_lite.rollout.turn_rows import Rows

    real_append = Rows.append

    def counting_append(self, r, tokens, *, tool=False):
        if not tool:
            written[r] += len(tokens)
        real_append(self, r, tokens, tool=tool)

    monkeypatch.setattr("grpo_lite.rollout.turns.sample_tokens", scripted)
    monkeypatch.setattr(Rows, "append", counting_append)
    ids, mask = encode_prompts(["What is 1?\n"], tok, max_prompt_tokens=64, chat=[False])
    n = len(call) + 1
    turns = decode_with_tools(
        model, ids, mask, group_size=2, max_new_tokens=n + 12, temperature=1.0, top_k=0, top_p=1.0,
        eos_ids=[eos], pad_id=tok.pad_token_id, tokenizer=tok, stop_strings=(), tool_format=Plain(tok),
        toolbox=_SlowBox(), max_tool_calls=1,
    )  # fmt: skip
    assert int(turns.lengths[1]) == n and turns.completion_ids[1, n - 1] == eos and not turns.truncated[1]
    assert [m["role"] for m in turns.exchanges[1]] == ["assistant"]
    answer = tok(Plain(tok).render(None, "1\n"), add_special_tokens=False)["input_ids"]
    assert int(turns.lengths[0]) == len(call) + len(answer) + 1  # the call, the answer, its EOS
    assert [m["role"] for m in turns.exchanges[0]] == ["assistant", "tool", "assistant"]


# ---- the loss sees only what the model wrote ------------------------------------------------------------
@pytest.mark.parametrize("pack", [False, True], ids=["rows", "packed"])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_loss_and_lora_grads_equal_a_loop_over_the_models_tokens_only(tiny_model_path, loss_type, pack):
    """The trainer's path (Rollout.rows + completion_logprobs + grpo_loss over the loss mask) against a
    slow reference written from the paper: each token the model wrote scored by a forward pass of its
    own prefix (prompt, completion so far, tool answers included, no padding), the tools' tokens never
    scored; per-token loss -(rho * A) + beta * k3 with rho = 1, normalised over the model's tokens.
    Rows 0 and 1 share their prompt (two completions of one prompt, as GRPO samples them), so the
    packed log-prob pass (``pack_prompts``: one sequence per prompt) lays both out in one row."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from grpo_lite.logprobs import adapters_disabled, completion_logprobs
    from grpo_lite.loss import microbatch_weight
    from grpo_lite.rollout import Rollout

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)  # a policy away from the reference: KL and its gradient are not zero
    V, P, T, beta = base.config.vocab_size, 5, 12, 0.1
    prompt_len, comp_len = [5, 5, 4], [12, 9, 7]
    tool_spans = [[(3, 6)], [(2, 4), (6, 8)], []]  # [start, end) of the tools' answers in each completion
    N = 3
    prompt_ids = torch.zeros((N, P), dtype=torch.long)
    prompt_mask = torch.zeros((N, P), dtype=torch.long)
    comp = torch.zeros((N, T), dtype=torch.long)
    comp_mask = torch.zeros((N, T), dtype=torch.long)
    tool = torch.zeros((N, T), dtype=torch.long)
    for i in range(N):
        prompt_ids[i, P - prompt_len[i] :] = torch.randint(3, V, (prompt_len[i],))
        prompt_mask[i, P - prompt_len[i] :] = 1
        comp[i, : comp_len[i]] = torch.randint(3, V, (comp_len[i],))
        comp_mask[i, : comp_len[i]] = 1
        for a, b in tool_spans[i]:
            tool[i, a:b] = 1
    prompt_ids[1] = prompt_ids[0]
    rollout = Rollout(prompt_ids, prompt_mask, comp, comp_mask, torch.zeros(N, dtype=torch.bool), [""] * N,
                      [""] * N, tool_mask=tool)  # fmt: skip
    adv = torch.tensor([1.0, -0.5, 0.25])
    lengths, extents = rollout.lengths, rollout.extents
    assert lengths.tolist() == [9, 5, 7] and extents.tolist() == comp_len

    # the trainer's path: two micro-batches
    model.zero_grad()
    fast_loss = 0.0
    for idx in (torch.tensor([0, 1]), torch.tensor([2])):
        ids, attn, mask, Tb = rollout.rows(idx, extents)
        logps, _ = completion_logprobs(model, ids, attn, mask, temperature=1.0, pack=pack)
        with adapters_disabled(model):
            ref, _ = completion_logprobs(model, ids, attn, mask, temperature=1.0, pack=pack)
        loss, _ = grpo_loss(
            logps, logps.detach(), ref, adv[idx], mask, beta=beta, loss_type=loss_type, max_tokens=T
        )
        w = microbatch_weight(loss_type, lengths[idx], total_seqs=N, total_tokens=int(lengths.sum()))
        (loss * w).backward()
        fast_loss += float(loss) * w
    fast_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    # the slow reference
    model.zero_grad()
    per_row = []
    for i in range(N):
        seq = torch.cat([prompt_ids[i, P - prompt_len[i] :], comp[i, : comp_len[i]]])
        terms = []
        for t in range(comp_len[i]):
            if tool[i, t]:
                continue  # a tool wrote it: never scored
            prefix = seq[: prompt_len[i] + t][None]
            lp = torch.log_softmax(model(input_ids=prefix).logits[0, -1].float(), -1)[comp[i, t]]
            with adapters_disabled(model):
                ref = torch.log_softmax(model(input_ids=prefix).logits[0, -1].float(), -1)[comp[i, t]]
            k3 = torch.exp(ref - lp) - (ref - lp) - 1
            terms.append(-(torch.exp(lp - lp.detach()) * adv[i]) + beta * k3)
        per_row.append(torch.stack(terms))
    if loss_type == "grpo":
        slow = torch.stack([r.mean() for r in per_row]).mean()
    elif loss_type == "dapo":
        slow = torch.cat(per_row).sum() / sum(len(r) for r in per_row)
    else:
        slow = torch.cat(per_row).sum() / (N * T)
    slow.backward()
    assert fast_loss == pytest.approx(float(slow), rel=1e-4, abs=1e-6)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(fast_grads[name], p.grad, atol=1e-6, rtol=1e-3)
    assert any(float(g.abs().max()) > 0 for g in fast_grads.values())


def test_no_gradient_reaches_the_tools_tokens():
    torch.manual_seed(0)
    logps = torch.randn(2, 6).requires_grad_()
    loss_mask = torch.tensor([[1, 1, 0, 0, 1, 1], [1, 0, 1, 1, 0, 0]])  # 0: a tool's answer or padding
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        for level in ("token", "sequence"):
            logps.grad = None
            loss, _ = grpo_loss(logps, logps.detach() - 0.1, logps.detach() + 0.2, torch.tensor([1.0, -1.0]),
                                loss_mask, beta=0.05, loss_type=loss_type, importance_sampling=level)  # fmt: skip
            loss.backward()
            assert torch.all(logps.grad[loss_mask == 0] == 0), (loss_type, level)
            assert torch.all(logps.grad[loss_mask == 1] != 0), (loss_type, level)


# ---- the trainer with tools --------------------------------------------------------------------------
@pytest.mark.parametrize("rollout_weights", ["merged", "adapter"])
def test_training_with_the_python_tool_end_to_end_and_max_tool_calls_steered(
    smollm2, tmp_path, rollout_weights
):
    """Two GRPO steps of SmolLM2 (4-bit + LoRA) with the python tool, sampled by the merged copy or the
    4-bit model with its adapter: rewards get the exchange and the counts, metrics count the calls, the
    LoRA moves; max_tool_calls steered to 0 stops the calls."""
    from grpo_lite.apps.tool_demo import multiplication_split, tool_demo_config
    from grpo_lite.callbacks import Callback
    from grpo_lite.trainer import GRPOTrainer

    seen = []

    def answer_and_record(prompts, completions, answer, tool_calls, tool_failures, **_):
        seen.append((completions, tool_calls, tool_failures))
        from rewards import last_number_accuracy

        return last_number_accuracy(prompts, completions, answer)

    class SteerAfterFirstStep(Callback):
        def on_step_end(self, trainer, metrics):
            if metrics["step"] == 1:
                trainer.steering.set_sampling(max_tool_calls=0)

    train, _ = multiplication_split()
    cfg = tool_demo_config("smollm2-135m-instruct", tmp_path / "run", seed=0, steps=2, prompts_per_step=2,
                           group_size=4, micro_batch_size=8, max_new_tokens=40, rollout_weights=rollout_weights)  # fmt: skip
    trainer = GRPOTrainer(cfg, train, [answer_and_record], callbacks=[SteerAfterFirstStep()], progress=False)
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    history = trainer.train()
    first, second = history
    assert first["rollout_weights"] == rollout_weights
    completions, calls, failures = seen[0]
    assert all(isinstance(c, list) and c[0]["role"] == "assistant" for c in completions)
    assert calls == [sum(m["role"] == "tool" for m in c) for c in completions]
    assert failures == [sum(m["role"] == "tool" and m["failed"] for m in c) for c in completions]
    assert first["tools/calls_per_completion"] == sum(calls) / 8 > 0
    assert first["tools/failure_rate"] == sum(failures) / sum(calls)
    assert first["tools/seconds"] >= 0 and first["max_tool_calls"] == 2
    assert second["changes"] == {"max_tool_calls": 0} and second["max_tool_calls"] == 0
    assert second["tools/calls_per_completion"] == 0 and seen[1][1] == [0] * 8
    assert all(math.isfinite(m["loss"]) for m in history)
    moved = [
        n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, lora[n])
    ]
    assert moved
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["tools/calls_per_completion"] for m in logged] == [
        m["tools/calls_per_completion"] for m in history
    ]
    info = json.loads((tmp_path / "run" / "adapter" / "grpo_lite.json").read_text())
    assert info["tools"] == {"names": ["python"], "format": "plain"}
    assert (
        "Trained with tools mid-answer (python; plain format)"
        in (tmp_path / "run" / "adapter" / "README.md").read_text()
    )
    # the dashboard's completions panel shows each call's answer
    from grpo_lite.notebook.panels import completions_html

    trainer.last_rollout["completions"] = completions
    trainer.last_rollout["reward"] = [0.0] * 8
    if sum(calls):
        assert "\u25b6 tool python [" in completions_html(trainer.last_rollout)


def test_config_names_what_is_wrong_with_tools():
    with pytest.raises(
        ValueError, match=r"GRPOConfig.tools must be built-in tool names from \['python'\]; got \('shell',\)"
    ):
        GRPOConfig(model="m", tools=("shell",))
    with pytest.raises(ValueError, match="GRPOConfig.sampler must be 'grpo_lite' when tools are on"):
        GRPOConfig(model="m", tools="python", sampler="transformers")
    with pytest.raises(ValueError, match="GRPOConfig.max_tool_calls must be an integer >= 0; got -1"):
        GRPOConfig(model="m", max_tool_calls=-1)
    with pytest.raises(ValueError, match="GRPOConfig.tool_timeout must be in"):
        GRPOConfig(model="m", tool_timeout=0)
    assert GRPOConfig(model="m", tools="python").tools == ("python",)
    assert GRPOConfig.from_dict(GRPOConfig(model="m", tools=("python",)).to_dict()).tools == ("python",)


def test_steering_refuses_a_bad_max_tool_calls():
    from grpo_lite.steering import Steering

    with pytest.raises(ValueError, match="max_tool_calls must be an integer >= 0; got -2"):
        Steering().set_sampling(max_tool_calls=-2)


def _history(calls, failures, limit=4):
    return [{"step": i + 1, "tools/calls_per_completion": c, "tools/failure_rate": f, "max_tool_calls": limit}
            for i, (c, f) in enumerate(zip(calls, failures, strict=True))]  # fmt: skip


def test_alarms_fire_when_tool_calls_explode_or_always_fail():
    names = lambda h: [a.name for a in check_alarms(h)]  # noqa: E731
    assert names(_history([0.5, 0.6, 0.5], [0.1, 0.2, 0.1])) == []
    assert names(_history([0.5, 1.0, 1.0, 0.8], [0.0, 1.0, 1.0, 1.0])) == ["tool_failures"]
    assert (
        names(_history([0.5, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0])) == []
    )  # a step without calls: not "always"
    assert names(_history([3.5, 3.4, 3.9], [0.0, 0.1, 0.0])) == ["tool_explosion"]  # near max_tool_calls
    assert names(_history([0.3, 0.3, 0.3, 0.5, 0.8, 1.2, 1.5], [0.0] * 7, limit=8)) == [
        "tool_explosion"
    ]  # 5x
    assert names(_history([0.3, 0.3, 0.3, 0.3, 0.3, 0.4, 0.5], [0.0] * 7, limit=8)) == []
    remedy = remedy_for(Alarm("tool_explosion", 3, "", ""), lr=1e-4, temperature=1.0, max_new_tokens=64,
                        max_tool_calls=4)  # fmt: skip
    requested = {}
    remedy.request(type("S", (), {"set_sampling": lambda self, **kw: requested.update(kw)})())
    assert remedy.label == "lower max_tool_calls to 2" and requested == {"max_tool_calls": 2}


def test_the_command_line_takes_the_built_in_tools():
    from grpo_lite.apps.cli import build_parser
    from grpo_lite.apps.commands import config_from_args

    args = build_parser().parse_args(["train", "--model", "m", "--tools", "python", "--max-tool-calls", "3",
                                      "--tool-format", "plain", "--tool-timeout", "2.5"])  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.tools, cfg.max_tool_calls, cfg.tool_format, cfg.tool_timeout) == (
        ("python",),
        3,
        "plain",
        2.5,
    )


def test_the_dashboard_steers_max_tool_calls(tiny_model_path, sum_rows, tmp_path):
    from conftest import digit_share
    from test_engine import make_cfg

    from grpo_lite.notebook import Dashboard
    from grpo_lite.trainer import GRPOTrainer

    def widgets(w):
        return [w, *(x for c in getattr(w, "children", ()) for x in widgets(c))]

    cfg = make_cfg(tiny_model_path, tmp_path / "run", max_steps=2, save_steps=0)
    plain = Dashboard(GRPOTrainer(cfg, sum_rows, [digit_share], progress=False))
    assert plain.max_tool_calls not in widgets(plain.widget())  # no tools: no field
    cfg = cfg.replace(output_dir=str(tmp_path / "tools"), tools=("python",), tool_format="plain")
    dash = Dashboard(GRPOTrainer(cfg, sum_rows, [digit_share], progress=False))
    assert dash.max_tool_calls in widgets(dash.widget()) and dash.max_tool_calls.value == 4
    dash.trainer.train_step()
    dash.max_tool_calls.value = 1
    history = dash.trainer.train()
    assert history[-1]["max_tool_calls"] == 1 and history[-1]["changes"] == {"max_tool_calls": 1}
    assert "tools/calls_per_completion" in history[-1]
    dash.max_tool_calls.value = -1
    assert "max_tool_calls must be an integer &gt;= 0" in dash.status.value


def test_scale_out_refuses_to_hand_a_run_with_tools_to_trl():
    from grpo_lite.apps.scale_out import trl_args

    with pytest.raises(
        ValueError, match=r"GRPOConfig.tools=\['python'\]: scale-out does not hand runs with tools"
    ):
        trl_args(GRPOConfig(model="m", tools=("python",)))


def test_a_branch_keeps_the_runs_own_tools(tiny_model_path, sum_rows, tmp_path):
    from conftest import digit_share
    from test_engine import make_cfg

    from grpo_lite.trainer import GRPOTrainer

    cfg = make_cfg(tiny_model_path, tmp_path / "run", max_steps=1, save_steps=1).replace(tools=("python",))
    trainer = GRPOTrainer(cfg, sum_rows, [digit_share], tools=[multiply], progress=False)
    assert trainer.tools.box.names == ["python", "multiply"] and trainer.sampling.max_tool_calls == 4
    trainer.train()
    branch = trainer.branch(1)
    assert branch.tools.box.names == ["python", "multiply"] and branch.tools.format.name == "plain"
