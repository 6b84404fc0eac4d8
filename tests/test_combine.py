"""The reward combinator: weights, None/NaN, error isolation, contract errors naming the function."""

import math
import time

import pytest

from rewards import RewardFunctionError, combine


def ones(prompts, completions, **kw):
    return [1.0] * len(completions)


def half_none(prompts, completions, **kw):
    return [None if i % 2 else 0.5 for i in range(len(completions))]


def boom(prompts, completions, **kw):
    raise ZeroDivisionError("bad reward")


def test_weighted_sum_leaves_out_none():
    c = combine(ones, half_none, weights=[2.0, 4.0])
    s = c.score(["p"] * 4, ["a", "b", "c", "d"])
    # index 0: 2*1 + 4*0.5 = 4; index 1: half_none is None, so only 2*1.
    assert s.total == [4.0, 2.0, 4.0, 2.0]
    m = s.metrics()
    assert m["rewards/half_none/mean"] == 0.5 and m["rewards/ones/std"] == 0.0


def test_no_value_at_all_is_nan():
    s = combine(half_none).score(["p", "p"], ["a", "b"])
    assert s.total[0] == 0.5 and math.isnan(s.total[1])


def test_raising_function_is_isolated_and_reported():
    s = combine(ones, boom).score(["p"], ["a"])
    assert s.total == [1.0]
    assert s.per_function["boom"] == [None]
    assert "ZeroDivisionError: bad reward" in s.errors["boom"]
    assert s.metrics()["reward_errors"] == 1.0


def test_nan_counts_as_none():
    s = combine(lambda prompts, completions, **k: [math.nan, 1.0], names=["nanny"]).score(
        ["p"] * 2, ["a", "b"]
    )
    assert s.per_function["nanny"] == [None, 1.0]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0], "returned 1 values for 2 completions"),  # too few
        ([1.0, "x"], "returned 'x' at index 1: not a number"),  # a string
        ([1.0, math.inf], "returned inf at index 1: rewards must be finite"),  # inf
        ("11", "must return a list of 2 floats; got str"),  # not a list
    ],
)
def test_contract_errors_name_the_function(values, message):
    def my_reward(prompts, completions, **kw):
        return values

    with pytest.raises(RewardFunctionError, match="'my_reward'") as err:
        combine(my_reward).score(["p"] * 2, ["a", "b"])
    assert message in str(err.value)


def test_columns_arrive_as_keywords_and_trl_call_returns_total():
    def exact(prompts, completions, answer, **kw):
        return [float(c == a) for c, a in zip(completions, answer, strict=True)]

    c = combine(exact, ones, weights=[1.0, 0.5])
    assert c(prompts=["p", "p"], completions=["4", "5"], answer=["4", "4"]) == [1.5, 0.5]


def test_replace_function_keeps_weight_and_source():
    c = combine(ones, weights=[3.0])
    new = c.replace_function("ones", half_none)
    assert new.rewards[0].weight == 3.0 and "def half_none" in new.rewards[0].source
    assert c.rewards[0].fn is ones  # the original is unchanged
    with pytest.raises(KeyError, match="have \\['ones'\\]"):
        c.replace_function("missing", ones)


def test_a_reward_that_fails_on_one_completion_costs_only_that_completion():
    """The batch call raises; scored one by one, the completion it fails on scores None (left out of
    the total) and the others keep their values; the error names the reward and the completion."""
    import json

    def parse(prompts, completions, **kw):
        return [float(json.loads(c)["x"]) for c in completions]  # raises on the one that is not JSON

    s = combine(ones, parse).score(["p"] * 3, ['{"x": 2}', "not json", '{"x": 0.5}'])
    assert s.per_function["parse"] == [2.0, None, 0.5]
    assert s.total == [3.0, 1.0, 1.5]  # the failing completion keeps the other reward's value
    assert "JSONDecodeError" in s.errors["parse"] and "parse raised on the batch" in s.errors["parse"]
    assert "completions [1] failed" in s.errors["parse"]

    # bounded: with a time limit the one-by-one pass stops at it, the rest score None
    def slow_then_boom(prompts, completions, **kw):
        if len(completions) > 1:
            raise ValueError("batch")
        time.sleep(0.3)
        return [1.0]

    s = combine(slow_then_boom).score(["p"] * 10, ["a"] * 10, time_limit=1.0)
    assert 1 <= sum(v == 1.0 for v in s.per_function["slow_then_boom"]) <= 4
    assert s.per_function["slow_then_boom"][-1] is None
