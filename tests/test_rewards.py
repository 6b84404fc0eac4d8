"""Table-driven tests of the built-in rewards, each case saying what it probes (hacking patterns included)."""

import threading
import time

import pytest

from rewards import (
    answer_tag_format,
    combine,
    exact_answer,
    last_number_accuracy,
    math_accuracy,
    overlong_penalty,
    run_bench,
    soft_format,
    strict_format,
    tag_count,
)

MATH = [
    # (completion, gold, expected, what it probes)
    ("<answer>1234</answer>", "1,234", 1.0, "thousands separator in the gold"),
    ("<answer>1,234</answer>", "1234", 1.0, "thousands separator in the answer"),
    ("<answer>1234.0</answer>", "1234", 1.0, "trailing .0"),
    ("<answer>$18</answer>", "18", 1.0, "currency sign"),
    ("<answer>\\$18</answer>", "18", 1.0, "escaped currency sign"),
    ("<answer>50%</answer>", "50", 1.0, "percent sign"),
    ("<answer>1e3</answer>", "1000", 1.0, "scientific notation"),
    ("<answer>\\frac{1}{2}</answer>", "0.5", 1.0, "LaTeX fraction vs decimal (math-verify)"),
    ("<answer>1/2</answer>", "0.5", 1.0, "plain fraction"),
    ("<answer>\\frac{1}{2}</answer>", "1/2", 1.0, "LaTeX fraction vs plain fraction"),
    ("<answer>17</answer>", "7", 0.0, "gold is a substring of the answer: not equal"),
    ("<answer>7</answer>", "17", 0.0, "answer is a substring of the gold: not equal"),
    ("<answer>3.0001</answer>", "3", 0.0, "close is not equal"),
    ("<answer>0.333</answer>", "1/3", 0.0, "a rounded decimal is not the fraction"),
    ("<answer></answer>", "7", 0.0, "empty answer (the 'gold in answer' bug)"),
    ("<answer> </answer>", "", 0.0, "empty answer against an empty gold"),
    ("<answer>7 or 8</answer>", "7", 0.0, "listing candidates"),
    ("<answer>1, 2, 3</answer>", "3", 0.0, "a list of candidates"),
    ("<answer>7</answer><answer>8</answer>", "7", 0.0, "two answer blocks"),
    ("<answer>7</answer><answer>7</answer>", "7", 0.0, "two answer blocks, even if equal"),
    ("\\boxed{7} and \\boxed{8}", "7", 0.0, "two different boxed answers"),
    ("\\boxed{7} so \\boxed{7}", "7", 1.0, "the same boxed answer twice"),
    ("The answer is \\boxed{\\frac{1}{2}}", "0.5", 1.0, "boxed with nested braces"),
    ("work...\n#### 42", "42", 1.0, "GSM8K-style #### line"),
    ("<think>maybe <answer>7</answer></think><answer>8</answer>", "7", 0.0, "answer inside think is ignored"),
    ("<think>it is 7</think><answer>7</answer>", "7", 1.0, "think then answer"),
    ("<think>\\boxed{7}</think>", "7", 0.0, "boxed only inside think"),
    ("<think>unclosed \\boxed{7}", "7", 0.0, "unclosed think hides what follows"),
    ("the answer is 7", "7", 0.0, "no answer source: last-number fallback is off by default"),
    ("<answer>\\boxed{12}</answer>", "12", 1.0, "boxed inside the answer block agrees with it"),
    ("<answer>-5</answer>", "-5", 1.0, "negative numbers"),
    ("<answer>" + "9" * 5000 + "</answer>", "9", 0.0, "a 5,000-digit answer"),
]


@pytest.mark.parametrize(("completion", "gold", "expected"), [c[:3] for c in MATH], ids=[c[3] for c in MATH])
def test_math_accuracy(completion, gold, expected):
    assert math_accuracy(["p"], [completion], answer=[gold]) == [expected]


def test_math_accuracy_last_number_fallback_option():
    assert math_accuracy(["p"], ["so it is 1,234."], answer=["1234"], last_number_fallback=True) == [1.0]


LAST_NUMBER = [
    # (completion, gold, expected, what it probes) — the SmolLM2 demo's reward
    ("7 + 8 = 15", "15", 1.0, "the equation's result"),
    ("7 + 8 is 15.", "15", 1.0, "a sentence ending in the number"),
    ("15", "15", 1.0, "the number alone"),
    ("7 + 8 = 14", "15", 0.0, "a wrong sum"),
    ("7 + 8", "15", 0.0, "the question repeated, no answer: its last number is 8"),
    ("To calculate 7 + 8, we need to", "15", 0.0, "talked past the budget"),
    ("It is 14 or 15", "15", 1.0, "one guess only: the last number counts"),
    ("It is 15 or 14", "15", 0.0, "...so listing candidates pays only as often as the last one is right"),
    ("<answer>15</answer> not 16", "15", 1.0, "a marked answer wins over the last number"),
    ("The answer is 1,500.", "1500", 1.0, "thousands separator"),
    ("", "15", 0.0, "empty"),
]


@pytest.mark.parametrize(
    ("completion", "gold", "expected"), [c[:3] for c in LAST_NUMBER], ids=[c[3] for c in LAST_NUMBER]
)
def test_last_number_accuracy(completion, gold, expected):
    chat = [{"role": "assistant", "content": completion}]
    assert last_number_accuracy(["p"], [chat], answer=[gold]) == [expected]


def test_math_accuracy_is_bounded_on_pathological_latex():
    evil = "<answer>" + "\\frac{" * 300 + "1" + "}{2}" * 300 + "^{" * 50 + "</answer>"
    start = time.monotonic()
    assert math_accuracy(["p"], [evil], answer=["1"], timeout=1.0) == [0.0]
    assert time.monotonic() - start < 15


def test_math_accuracy_works_off_the_main_thread():
    out = []
    t = threading.Thread(
        target=lambda: out.append(math_accuracy(["p"], ["<answer>\\frac{1}{2}</answer>"], answer=["0.5"]))
    )
    t.start()
    t.join(timeout=60)
    assert out == [[1.0]]


def test_chat_message_completions_and_trl_style_call():
    chat = [[{"role": "assistant", "content": "<think>x</think><answer>4</answer>"}]]
    assert math_accuracy(prompts=[[{"role": "user", "content": "2+2?"}]], completions=chat, answer=["4"]) == [
        1.0
    ]
    assert strict_format(prompts=["p"], completions=chat) == [1.0]
    assert exact_answer(prompts=["p"], completions=chat, answer=["4"], extra_column=[1]) == [1.0]


FORMAT = [
    # (completion, strict, soft, what it probes)
    ("<think>a</think><answer>1</answer>", 1.0, 1.0, "the template"),
    ("<think>a</think>\n<answer>1</answer>\n", 1.0, 1.0, "whitespace between and after"),
    ("<think>a</think><answer>1</answer> trailing", 0.0, 1.0, "text after </answer>"),
    ("intro <think>a</think><answer>1</answer>", 0.0, 1.0, "text before <think>"),
    ("<answer>1</answer><think>a</think>", 0.0, 0.0, "wrong order"),
    ("<think>a</think><answer></answer>", 0.0, 1.0, "empty answer does not earn strict credit"),
    ("<think>a</think><think>b</think><answer>1</answer>", 0.0, 1.0, "repeated think block"),
    ("<think>a<answer>1</answer></think><answer>1</answer>", 0.0, 1.0, "answer tag nested in think"),
    ("no tags", 0.0, 0.0, "plain text"),
]


@pytest.mark.parametrize(
    ("completion", "strict", "soft"), [c[:3] for c in FORMAT], ids=[c[3] for c in FORMAT]
)
def test_strict_and_soft_format(completion, strict, soft):
    assert strict_format(["p"], [completion]) == [strict]
    assert soft_format(["p"], [completion]) == [soft]


TAGS = [
    ("<think>a</think><answer>1</answer>", 1.0, "all four tags once, in order"),
    ("<think>a</think>", 0.5, "two tags"),
    (
        "<answer>1</answer><think>a</think>",
        0.484,
        "out of order: the think pair counts, 16 chars trail </answer>",
    ),
    ("<think><think><think>a</think><answer>1</answer>", 0.25, "tag spam is penalised"),
    ("<think>a</think><answer>1</answer>" + "x" * 100, 0.9, "text after </answer>"),
    ("<think>a</think><answer>1</answer>" + "x" * 5000, 0.5, "the trailing-text penalty is capped"),
]


@pytest.mark.parametrize(("completion", "expected"), [c[:2] for c in TAGS], ids=[c[2] for c in TAGS])
def test_tag_count(completion, expected):
    assert tag_count(["p"], [completion]) == [pytest.approx(expected)]


def test_format_gated_on_correctness():
    completions = ["<think>a</think><answer>5</answer>", "<think>a</think><answer>4</answer>"]
    kw = dict(answer=["4", "4"], require_correct=True)
    assert strict_format(["p", "p"], completions, **kw) == [0.0, 1.0]
    assert tag_count(["p", "p"], completions, **kw) == [0.0, 1.0]
    with pytest.raises(ValueError, match="'answer' column"):
        soft_format(["p"], completions[:1], require_correct=True)
    # Format never out-earns correctness: a wrong but well-formatted answer scores below a right one.
    total = combine(math_accuracy, strict_format, weights=[1.0, 0.5])
    wrong, right = total(["p", "p"], completions, answer=["4", "4"])
    assert right > wrong


@pytest.mark.parametrize(
    ("length", "expected"),
    [(0, 0.0), (60, 0.0), (70, -0.5), (80, -1.0), (81, -1.0), (500, -1.0)],  # L_max 80, L_cache 20
)
def test_overlong_penalty_characters(length, expected):
    fn = overlong_penalty(max_length=80, cache_length=20)
    assert fn.__name__ == "overlong_penalty"
    assert fn(["p"], ["x" * length]) == [pytest.approx(expected)]


def test_overlong_penalty_counts_tokens_with_a_tokenizer(tiny_model_path):
    from grpo_lite.policy.model import load_tokenizer

    tok = load_tokenizer(str(tiny_model_path))
    fn = overlong_penalty(max_length=4, cache_length=2, tokenizer=tok)
    # "<answer>" is one token of this tokenizer: 3 tokens, not 10 characters.
    assert fn(["p"], ["<answer>12"]) == [-0.5]
    with pytest.raises(ValueError, match="cache_length"):
        overlong_penalty(max_length=4, cache_length=5)


def test_exact_answer_and_tag_format():
    completions = ["<answer>5</answer>", "<answer>5</answer> extra", "<answer></answer>", "5"]
    assert exact_answer(["p"] * 4, completions, answer=["5", "5", "", "5"]) == [1.0, 1.0, 0.0, 0.0]
    assert answer_tag_format(["p"] * 4, completions) == [1.0, 0.0, 1.0, 0.0]


def test_bench_table():
    def boom(prompts, completions, **kw):
        raise RuntimeError("broken reward")

    rows = run_bench(
        [math_accuracy, strict_format, boom],
        [
            {"prompt": "2+2?", "completion": "<think>x</think><answer>4</answer>", "answer": "4"},
            {"prompt": "2+2?", "completion": "<answer>5</answer>", "answer": "4"},
        ],
    )
    assert [(r["math_accuracy"], r["strict_format"], r["boom"], r["total"]) for r in rows] == [
        (1.0, 1.0, None, 2.0),
        (0.0, 0.0, None, 0.0),
    ]
    assert rows[0]["errors"] == {"boom": "RuntimeError: broken reward"}


def test_run_bounded_kills_a_runaway_call_and_recovers():
    from rewards.timeout import run_bounded

    start = time.monotonic()
    assert run_bounded(time.sleep, 30, timeout=0.5, default="timed out") == "timed out"
    assert time.monotonic() - start < 5
    assert run_bounded(abs, -3, timeout=5, default=None) == 3  # a fresh helper serves the next call


def test_rewards_package_stands_alone():
    import ast
    import pathlib

    for path in pathlib.Path("rewards").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("grpo_lite") for n in names), f"{path} imports grpo_lite"
