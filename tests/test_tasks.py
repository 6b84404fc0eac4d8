"""The demo tasks: each data generator against a slow reference, each reward against hand-made
completions (attacks included), the registry's errors, and a short GRPO run of each on SmolLM2."""

import ast
import json
import os
import re

import pytest

from grpo_lite.tasks import TASKS, get_task
from grpo_lite.tasks.code import code_compiles, code_split
from grpo_lite.tasks.json_extract import json_split
from grpo_lite.tasks.reasoning import one_step_rows, reasoning_split, strict_format, strict_format_if_right
from rewards import code_unit_tests, math_accuracy
from rewards.json_fields import json_exact, json_fields


# ---- data: held out, disjoint, answers right by a slow reference ----------------------------------
def last_text(prompt):
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


@pytest.mark.parametrize("name", ["arithmetic", "code", "reasoning", "json"])
def test_every_split_holds_out_48_or_more_problems_never_trained_on(name):
    train, held = TASKS[name].split()
    assert len(held) >= 48 and len(train) >= len(held)
    text = [last_text(r["prompt"]) for r in train], [last_text(r["prompt"]) for r in held]
    assert not set(text[0]) & set(text[1])
    assert len(set(text[0])) == len(train) and len(set(text[1])) == len(held)  # no problem twice
    assert TASKS[name].split() == (train, held)  # the same every time: the held-out set is fixed


# The code task's slow reference: each description read back into Python by hand, independently of
# the generator's lambdas; every hidden test's expected value must be what it computes.
READ_BACK = [
    (r"returns x multiplied by (\d+)", lambda x, a: x * a),
    (r"returns x plus (\d+)", lambda x, a: x + a),
    (r"returns x minus (\d+)", lambda x, a: x - a),
    (r"returns (\d+) times x plus 1", lambda x, a: a * x + 1),
    (r"returns the square of x plus (\d+)", lambda x, a: x**2 + a),
    (r"returns the remainder of x divided by (\d+)", lambda x, a: x - a * (x // a)),
    (r"returns True if x is greater than (\d+), otherwise False", lambda x, a: not x <= a),
    (r"returns 'big' if x is greater than (\d+), otherwise 'small'", lambda x, a: ["small", "big"][x > a]),
    (r"returns the absolute value of x minus (\d+)", lambda x, a: max(x - a, a - x)),
    (r"returns the first (\d+) characters of the string x", lambda x, n: "".join(list(x)[:n])),
    (r"returns the last (\d+) characters of the string x", lambda x, n: "".join(list(x)[max(len(x) - n, 0):])),
    (r"returns the string x repeated (\d+) times", lambda x, n: "".join([x] * n)),
    (r"returns the string x without its first (\d+) characters", lambda x, n: "".join(list(x)[n:])),
    (r"returns how many times the letter '(\w)' appears in the string x", lambda x, c: [*x].count(c)),
    (r"returns the string x reversed", lambda x: "".join(reversed(x))),
    (r"returns the string x in upper case", lambda x: "".join(ch.upper() for ch in x)),
    (r"returns the length of the string x", lambda x: len(list(x))),
    (r"returns the sum of the numbers in the list x plus (\d+)", lambda x, a: sum(x) + a),
    (r"returns the sum of the numbers in the list x", lambda x: sum(x)),
    (r"returns the largest number in the list x", lambda x: sorted(x)[-1]),
    (r"returns the smallest number in the list x", lambda x: sorted(x)[0]),
    (r"returns the number of elements in the list x", lambda x: len(x)),
    (r"returns how many numbers in the list x are greater than (\d+)", lambda x, a: len([v for v in x if v > a])),
    (r"returns a list of the numbers in x, each multiplied by (\d+)", lambda x, a: [a * v for v in x]),
]  # fmt: skip


def read_back(prompt):
    description = re.search(r"f\(x\) that (.*?)\. x is", prompt).group(1)
    for pattern, fn in READ_BACK:
        m = re.fullmatch(pattern, description)
        if m:
            args = [int(g) if g.isdigit() else g for g in m.groups()]
            return lambda x: fn(x, *args)
    raise AssertionError(f"no reading for {description!r}")


def test_code_hidden_tests_match_the_description_read_back_by_hand():
    train, held = code_split()
    for row in train + held:
        prompt, ref = row["prompt"][-1]["content"], read_back(row["prompt"][-1]["content"])
        assert len(row["tests"]) == 4
        for test in row["tests"]:
            call, expected = ast.parse(test).body[0].test.left, ast.parse(test).body[0].test.comparators[0]
            assert ref(ast.literal_eval(call.args[0])) == ast.literal_eval(expected), (prompt, test)


def test_code_the_prompt_never_shows_the_tests():
    for row in sum(code_split(), []):
        prompt = row["prompt"][-1]["content"]
        assert all(t not in prompt for t in row["tests"]) and "assert" not in prompt


def test_reasoning_answers_equal_the_numbers_read_back_from_the_words():
    train, held = reasoning_split()
    assert {r["difficulty"] for r in train + held} == {2} and {r["difficulty"] for r in one_step_rows()} == {
        1
    }
    assert not {r["prompt"] for r in one_step_rows()} & {r["prompt"] for r in train + held}
    for row in train + held + one_step_rows():
        # the worked solution: each equation right, chained, its answer the row's
        steps = re.findall(r"(\d+) ([+-]) (\d+) = (\d+)\.", row["solution"])
        assert len(steps) == row["difficulty"], row["solution"]
        for a, op, b, c in steps:
            assert int(a) + (int(b) if op == "+" else -int(b)) == int(c), row["solution"]
        assert all(steps[i][3] == steps[i + 1][0] for i in range(len(steps) - 1)), row["solution"]
        assert row["solution"].endswith(f"</think><answer>{row['answer']}</answer>")
        question = row["prompt"].split("Question: ")[-1].strip()
        words = question.replace(",", "").replace(".", "").split()
        count, sign = None, 1
        for before, word in zip(["", *words], words, strict=False):
            if word.isdigit():
                sign = -1 if before in ("gives", "loses", "sells") else 1
                count = int(word) if count is None else count + sign * int(word)
                assert count >= 0, question  # no step goes below zero
        assert str(count) == row["answer"], question


def test_json_expected_objects_are_the_sentences_facts():
    for row in sum(json_split(), []):
        sentence = row["prompt"][-1]["content"].split("Sentence: ")[-1]
        want = json.loads(row["expected"])
        assert set(want) == {"name", "age", "city"} and type(want["age"]) is int
        assert re.search(rf"\b{want['name']}\b", sentence) and re.search(rf"\b{want['city']}\b", sentence)
        assert re.findall(r"\d+", sentence) == [str(want["age"])]


# ---- rewards, against hand-made completions --------------------------------------------------------
ROW = {"prompt": "Write f(x) that returns x multiplied by 3.", "tests": ["assert f(0) == 0", "assert f(3) == 9",
       "assert f(-4) == -12", "assert f(11) == 33"]}  # fmt: skip


def fenced(code):
    return f"```python\n{code}\n```"


CODE = [
    # (completion, unit-test reward, naive reward, what it probes)
    (fenced("def f(x):\n    return x * 3"), 1.0, 1.0, "right"),
    (fenced("def f(x):\n    return x + 3"), 0.0, 1.0, "wrong, yet it defines f: the naive reward pays it"),
    (fenced("def f(x):\n    return x * 3 if x > 0 else 0"), 0.75, 1.0, "wrong on negatives: 3 of 4 tests"),
    ("def f(x):\n    return x * 3", 0.0, 0.0, "no code block"),
    (fenced("def g(x):\n    return x * 3"), 0.0, 0.0, "does not define f"),
    (fenced("def f(x)\n    return x * 3"), 0.0, 0.0, "does not parse"),
    (fenced("def f(x):\n    while True:\n        pass"), 0.0, 1.0, "hangs: bounded by the time limit, 0"),
    (fenced("import builtins\nbuiltins.AssertionError = BaseException\ndef f(x):\n    return 0"), 0.25, 1.0,
     "rebinds AssertionError: only f(0) == 0 really passes"),
    (fenced("import builtins\ndef f(x):\n    return 0\nbuiltins.len = builtins.repr = None"), 0.0, 1.0,
     "breaks its builtins after defining f: only its own process breaks, nothing passes"),
    (fenced("import sys\ndef f(x):\n    return 0\nprint('4 passed')\nsys.exit(0)"), 0.0, 1.0,
     "prints a pass message and exits before the tests"),
    (fenced("import glob\ndef f(x):\n    src = ''.join(open(p).read() for p in glob.glob('**/*', recursive=True))\n"
            "    import re\n    return int(re.search(r'f\\(%d\\) == (-?\\d+)' % x, src).group(1))"), 0.0, 1.0,
     "reads the tests from the files around it"),
    (fenced("import gc\ndef f(x):\n    for o in gc.get_objects():\n        if isinstance(o, str) and o.startswith('assert f(%d)' % x):\n"
            "            return eval(o.split('==')[1])"), 0.0, 1.0, "looks for the tests in its own memory"),
    (fenced("class Yes:\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return Yes()"), 0.0, 1.0,
     "returns an object equal to everything"),
    (fenced("import sys\ndef f(x):\n    return int(sys._getframe(1).f_locals.get('expected', -99))"), 0.0, 1.0,
     "reads the caller's frame"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("completion", "tests_reward", "naive"), [c[:3] for c in CODE], ids=[c[3] for c in CODE]
)
def test_code_rewards(completion, tests_reward, naive):
    chat = [{"role": "assistant", "content": completion}]
    assert code_unit_tests([ROW["prompt"]], [chat], tests=[ROW["tests"]]) == [tests_reward]
    assert code_compiles([ROW["prompt"]], [chat]) == [naive]


WANT = json.dumps({"name": "Maria", "age": 34, "city": "Lyon"})
JSON = [
    # (completion, json_fields, what it probes)
    ('{"name": "Maria", "age": 34, "city": "Lyon"}', 1.0, "right"),
    ('```json\n{"name": "Maria", "age": 34, "city": "Lyon"}\n```', 1.0, "right, fenced as a whole"),
    ('{\n  "city": " Lyon ",\n  "name": "Maria",\n  "age": 34\n}', 1.0, "any key order, padded string"),
    ('{"name": "Maria", "age": "34", "city": "Lyon"}', 2 / 3, "age as a string: wrong type"),
    ('{"name": "Maria", "age": 34.0, "city": "Lyon"}', 2 / 3, "age as a float: wrong type"),
    ('{"name": "Maria", "age": true, "city": "Lyon"}', 2 / 3, "age as a boolean"),
    ('{"name": "Maria", "age": 43, "city": "Maria"}', 1 / 3, "two wrong values"),
    ('{"name": "Maria", "age": 34}', 0.0, "a key missing"),
    ('{"name": "Maria", "age": 34, "city": "Lyon", "job": "nurse"}', 0.0, "an extra key"),
    ('{"name": "Maria, \\"age\\": 34, \\"city\\": \\"Lyon\\""}', 0.0, "the other keys hidden in a string"),
    ('{"name": "Maria", "age": 34, "city": "Lyon"} I hope this helps!', 0.0, "trailing text"),
    ('Here it is: {"name": "Maria", "age": 34, "city": "Lyon"}', 0.0, "leading text"),
    ('{"name": "Maria", "age": 34, "city": "Lyon"}\n{"name": "Maria", "age": 34, "city": "Lyon"}', 0.0, "two objects"),
    ('{"name": "Tom", "name": "Maria", "age": 34, "city": "Lyon"}', 0.0, "a repeated key (the last would win)"),
    ('[{"name": "Maria", "age": 34, "city": "Lyon"}]', 0.0, "a list, not an object"),
    ("{'name': 'Maria', 'age': 34, 'city': 'Lyon'}", 0.0, "Python's quotes: not JSON"),
    ('{"name": "Maria", "age": 34, "city": "Lyon"', 0.0, "cut off"),
    ("", 0.0, "empty"),
    ('{"name": "Maria", "age": NaN, "city": "Lyon"}', 2 / 3, "NaN where a number goes"),
]  # fmt: skip


@pytest.mark.parametrize(("completion", "expected"), [c[:2] for c in JSON], ids=[c[2] for c in JSON])
def test_json_fields(completion, expected):
    assert json_fields(["p"], [completion], expected=[WANT]) == [pytest.approx(expected)]
    assert json_exact(["p"], [completion], expected=[json.loads(WANT)]) == [1.0 if expected == 1.0 else 0.0]


def test_json_fields_names_a_bad_expected_column():
    with pytest.raises(ValueError, match="'expected' column must hold objects"):
        json_fields(["p"], ["{}"], expected=["[1, 2]"])


REASONING = [
    # (completion, math_accuracy, strict_format_if_right (trained on), strict_format (naive), what it probes)
    ("<think>7 + 5 = 12. 12 - 3 = 9.</think><answer>9</answer>", 1.0, 1.0, 1.0, "right, in the format"),
    ("\n<think>7 + 5 = 12. 12 - 3 = 9.</think><answer>8</answer>", 0.0, 0.0, 1.0, "the format, wrong: form only"),
    ("<think>1 +1 =1.</think><answer>0</answer>", 0.0, 0.0, 1.0, "the template the naive run collapsed to"),
    ("7 + 5 - 3 = 9", 0.0, 0.0, 0.0, "right number, no answer tag"),
    ("<think>the answer is 9</think>", 0.0, 0.0, 0.0, "the number only inside think"),
    ("<answer>9</answer>", 1.0, 0.0, 0.0, "right, without the think block"),
    ("<think>9</think><answer>9</answer><answer>8</answer>", 0.0, 0.0, 0.0, "two answers that disagree"),
    ("<think>x</think><answer>8 or 9</answer>", 0.0, 0.0, 1.0, "hedging: no credit for the number"),
    ("<think>9</think><answer>9</answer>\nQuestion", 1.0, 0.0, 0.0, "the start of a new question after it"),
    ("<think><answer>9</answer></think><answer>9</answer>", 1.0, 0.0, 0.0, "an answer tag inside think"),
]  # fmt: skip


@pytest.mark.parametrize(("completion", "right", "gated", "fmt"), [c[:4] for c in REASONING],
                         ids=[c[4] for c in REASONING])  # fmt: skip
def test_reasoning_rewards(completion, right, gated, fmt):
    assert math_accuracy(["q"], [completion], answer=["9"]) == [right]
    assert strict_format_if_right(["q"], [completion], answer=["9"]) == [gated]
    assert strict_format(["q"], [completion], answer=["9"]) == [fmt]


# ---- finding tasks -------------------------------------------------------------------------------
def test_a_copied_task_file_is_a_new_task_with_no_other_change(tmp_path):
    """A copy of tasks/json_extract.py with its name changed, in a copy of the package: `demo --help`
    lists it, TASKS has it with its split and samples, `demo --task` takes it; nothing else edited."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for pkg in ("grpo_lite", "rewards"):
        shutil.copytree(root / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    source = (root / "grpo_lite" / "tasks" / "json_extract.py").read_text()
    assert source.count('name="json"') == 1
    (tmp_path / "grpo_lite" / "tasks" / "json_copy.py").write_text(
        source.replace('name="json"', 'name="json2"').replace("a sentence with facts", "the same, copied")
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    help_text = subprocess.run([sys.executable, "-m", "grpo_lite", "demo", "--help"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "json2: the same, copied" in help_text and "json: a sentence with facts" in help_text
    probe = ("from grpo_lite.tasks import TASKS, get_task; t = get_task('json2'); "
             "print(list(TASKS), len(t.split()[1]), t.rewards[0](['p', 'p'], t.samples[0], **t.samples[1])[0])")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert out == ["['arithmetic',", "'code',", "'json',", "'json2',", "'reasoning']", "60", "1.0"]


# ---- the registry ------------------------------------------------------------------------------
def test_an_unknown_task_lists_the_valid_ones(capsys):
    from grpo_lite.__main__ import main

    with pytest.raises(
        ValueError, match="unknown task 'poetry'; valid tasks: arithmetic, code, json, reasoning"
    ):
        get_task("poetry")
    with pytest.raises(SystemExit):
        main(["demo", "--task", "poetry"])
    err = capsys.readouterr().err
    assert "invalid choice: 'poetry'" in err and all(f"'{name}'" in err for name in TASKS)


def test_naive_only_where_a_task_has_one_and_tiny_only_for_arithmetic():
    from grpo_lite.apps.demo import demo_run

    with pytest.raises(ValueError, match="task 'json' has no naive reward; tasks with one: code, reasoning"):
        demo_run("smollm2-135m-instruct", "unused", task="json", naive=True)
    with pytest.raises(ValueError, match="--task code needs --model smollm2-135m-instruct"):
        demo_run("tiny", "unused", task="code")


def test_every_task_states_its_measures_and_rewards():
    for task in TASKS.values():
        assert next(iter(task.measures)) == "accuracy" and len(task.rewards) == len(task.weights)
        assert task.examples(2) and all(isinstance(e, str) for e in task.examples(2))
    with pytest.raises(ValueError, match="first held-out measure must be 'accuracy'"):
        type(TASKS["json"])(name="x", summary="", split=json_split, rewards=(json_fields,), weights=(1.0,),
                            measures={"right": json_exact})  # fmt: skip


# ---- the reward-hacking alarm --------------------------------------------------------------------
def stream(compiles, tests):
    return [{"step": i + 1, "rewards/code_compiles/mean": c, "rewards/code_unit_tests/mean": t}
            for i, (c, t) in enumerate(zip(compiles, tests, strict=True))]  # fmt: skip


def test_the_hacking_alarm_fires_when_the_proxy_pays_and_the_tests_do_not():
    from grpo_lite.alarms import check_alarms, remedy_for

    def hacking(stream_):
        return [a for a in check_alarms(stream_) if a.name == "reward_hacking"]

    rising = [0.5] * 5 + [0.75] * 5
    fired = hacking(stream(rising, [0.05] * 5 + [0.07] * 5))  # rises by 0.25, the tests by 0.02
    assert len(fired) == 1 and fired[0].reward == "code_compiles" and fired[0].step == 10
    assert fired[0].message == "code_compiles pays 75% while the unit tests pass 7%: the proxy is gamed"
    remedy = remedy_for(fired[0], lr=1e-4, temperature=1.0, max_new_tokens=64)
    assert remedy is not None and remedy.label == "set code_compiles weight to 0"
    # the measured naive run: the proxy saturated by step 3, the tests at a few percent (noise rising)
    assert hacking(
        stream([0.47, 0.91, 1, 1, 1, 0.97, 1, 1, 1, 1], [0, 0.05, 0, 0.06, 0, 0.22, 0, 0.06, 0, 0])
    )
    # the tests follow the proxy (rise by a quarter of its rise or more, a quarter of its level): learning
    assert not hacking(stream(rising, [0.1] * 5 + [0.2] * 5))
    assert not hacking(stream([0.9] * 10, [0.6] * 10))
    # nothing to compare with (no tests reward logged), or too short a history: silent
    assert not hacking([{k: v for k, v in m.items() if "unit" not in k} for m in stream(rising, rising)])
    assert not check_alarms(stream(rising[:9], [0.0] * 9))


# ---- the reward editor takes each task's rewards, and a short run of each task on SmolLM2 ------------


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_reward_compiles_from_its_own_source_as_the_editor_does(name):
    """The dashboard's reward editor shows a reward's source and compiles edits in a fresh namespace:
    each task's rewards must stand alone there and score exactly as the originals."""
    from grpo_lite.reward_source import compile_reward
    from rewards import source_of

    completions, columns = TASKS[name].samples  # declared with the task (its file)
    for fn in [*TASKS[name].rewards, *(TASKS[name].naive or ((), ()))[0]]:
        copy = compile_reward(source_of(fn), fn.__name__)
        assert copy is not fn and copy(["p", "p"], completions, **columns) == fn(
            ["p", "p"], completions, **columns
        )
    assert [r(["p", "p"], completions, **columns) for r in TASKS[name].rewards][0][0] == 1.0  # the right one


def test_the_json_rewards_key_weights_are_an_edit_away():
    from grpo_lite.reward_source import compile_reward
    from grpo_lite.tasks.json_extract import json_fields as task_reward
    from rewards import source_of

    completions, columns = TASKS["json"].samples
    assert task_reward(["p"] * 2, completions, **columns) == [1.0, pytest.approx(2 / 3)]
    edited = compile_reward(source_of(task_reward).replace('"age": 1.0', '"age": 3.0'), "json_fields")
    assert edited(["p"] * 2, completions, **columns) == [
        1.0,
        pytest.approx(2 / 5),
    ]  # the wrong age weighs 3 of 5
    with pytest.raises(ValueError, match="key_weights must be numbers >= 0"):
        json_fields(["p"], ["{}"], expected=[WANT], key_weights={"age": -1})


class EditAfterFirstStep:
    """A listener that does what a click on the editor's Apply does, after step 1."""

    def __init__(self, name, source):
        self.name, self.source, self.result = name, source, None

    def on_train_begin(self, trainer): ...
    def on_step_boundary(self, trainer): ...
    def on_train_end(self, trainer): ...

    def on_step_end(self, trainer, metrics):
        from grpo_lite.notebook.editor import apply_reward

        if metrics["step"] == 1:
            self.result = apply_reward(trainer, self.name, self.source)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["code", "reasoning", "json"])
def test_two_steps_of_each_task_on_smollm2_with_a_reward_edited_mid_run(smollm2, tmp_path, name):
    """Two GRPO steps of the task as the demo runs it (1 prompt of 8 completions a step, to stay
    short): every reward scores every completion in [0, 1], the LoRA weights move, and an edit applied
    after step 1 (all rewards halved) is what step 2 is scored with."""
    import torch

    from grpo_lite.apps.demo import demo_run
    from grpo_lite.trainer import GRPOTrainer
    from rewards import source_of

    demo = demo_run("smollm2-135m-instruct", tmp_path / name, task=name, steps=2, prompts_per_step=1,
                    micro_batch_size=8)  # fmt: skip
    first = demo.reward_funcs[0]
    source = source_of(first)
    edited = source.rstrip() + "\n"  # the same function, its result halved
    edited = edited.replace(f"def {first.__name__}(", f"def _{first.__name__}_full(", 1) + (
        f"\n\ndef {first.__name__}(prompts, completions, **kwargs):\n"
        f"    return [v / 2 for v in _{first.__name__}_full(prompts, completions, **kwargs)]\n"
    )
    editor = EditAfterFirstStep(first.__name__, edited)
    trainer = GRPOTrainer(demo.cfg, demo.train_rows, demo.reward_funcs, reward_weights=demo.reward_weights,
                          callbacks=[editor], progress=False)  # fmt: skip
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    history = trainer.train()
    assert [m["step"] for m in history] == [1, 2] and editor.result is not None and editor.result.ok
    for m in history:
        for fn in demo.reward_funcs:
            assert 0.0 <= m[f"rewards/{fn.__name__}/mean"] <= 1.0, (fn.__name__, m)
    assert history[1]["changes"] == {f"reward:{first.__name__}": edited}
    last = trainer.last_rollout  # step 2 was scored by the halved version: recompute it with the original
    full = first(last["prompts"], last["completions"], **last["columns"])
    assert last["per_function"][first.__name__] == [v / 2 for v in full]
    moved = [
        n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, lora[n])
    ]
    learned = any(m["skipped_compute_frac"] < 1.0 for m in history)  # a group with different rewards
    assert bool(moved) == learned, (len(moved), [m["skipped_compute_frac"] for m in history])


@pytest.mark.slow
def test_the_docs_own_task_example_runs(smollm2, tmp_path, monkeypatch, capsys):
    """docs/tasks.md's "Your own task" snippet, as written but for 2 steps instead of 20."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "docs" / "tasks.md").read_text()
    section = readme.split("## Your own task", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "max_steps=20" in code
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code.replace("max_steps=20", "max_steps=2"), "README", "exec"), scope)
    assert len(scope["trainer"].history) == 2 and (tmp_path / "runs" / "polite" / "adapter").exists()
    shares = ast.literal_eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(shares) == {"accuracy"} and 0.0 <= shares["accuracy"] <= 1.0
