"""The scenario table, the #sim directive and token texts (pure: no server)."""

from __future__ import annotations

import pytest

from gateway.sim.scenarios import (
    MAX_TOKENS,
    SCENARIOS,
    Plan,
    is_directive,
    parse_plan,
    plan_from,
    prompt_tokens,
    token_texts,
)

DEFAULTS = Plan(interval=0.002)


def test_prompt_without_directive_keeps_the_defaults() -> None:
    assert parse_plan("hello\nworld #sim scenario=cut", DEFAULTS) == DEFAULTS
    assert parse_plan("", DEFAULTS) == DEFAULTS


def test_directive_overrides_every_key() -> None:
    text = (
        "Tell me a story.\n"
        "#sim scenario=stall tokens=40 interval_ms=5 first_token_ms=250 tag=t-1 retry_after=7"
    )
    assert parse_plan(text, DEFAULTS) == Plan(
        scenario="stall",
        tokens=40,
        interval=0.005,
        first_token_delay=0.25,
        tag="t-1",
        retry_after=7,
    )


def test_directive_lines_apply_in_order_and_may_be_indented() -> None:
    text = "  #sim tokens=3 tag=a\nmiddle\n#sim tag=b\n#sim"
    assert parse_plan(text, DEFAULTS) == Plan(tokens=3, interval=0.002, tag="b")


def test_only_an_exact_first_word_is_a_directive() -> None:
    assert is_directive("#sim")
    assert is_directive("\t#sim tokens=1")
    assert not is_directive("#simulate tokens=1")
    assert not is_directive("say #sim tokens=1")
    assert parse_plan("#simulate scenario=bogus", DEFAULTS) == DEFAULTS


def test_bounds_are_inclusive() -> None:
    plan = parse_plan(f"#sim tokens={MAX_TOKENS} interval_ms=3600000 tokens=0", DEFAULTS)
    assert (plan.tokens, plan.interval) == (0, 3600.0)
    assert parse_plan(f"#sim tokens={MAX_TOKENS}", DEFAULTS).tokens == MAX_TOKENS


@pytest.mark.parametrize(
    ("directive", "message"),
    [
        ("#sim color=red", "unknown key 'color'"),
        ("#sim scenario=explode", "unknown scenario"),
        ("#sim tokens", "expected key=value"),
        ("#sim tokens=", "expected key=value"),
        ("#sim tokens=abc", "expected a whole number"),
        ("#sim tokens=1.5", "expected a whole number"),
        ("#sim tokens=-1", "between 0 and"),
        (f"#sim tokens={MAX_TOKENS + 1}", "between 0 and"),
        ("#sim interval_ms=fast", "expected a number"),
        ("#sim interval_ms=nan", "between 0 and"),
        ("#sim first_token_ms=inf", "between 0 and"),
        ("#sim first_token_ms=3600001", "between 0 and"),
        ("#sim retry_after=3601", "between 0 and"),
        ("#sim tag=" + "x" * 201, "longer than 200"),
    ],
)
def test_bad_directives_raise_a_clear_value_error(directive: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_plan(f"hi\n{directive}", DEFAULTS)


def test_defaults_naming_an_unknown_scenario_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_plan("hi", Plan(scenario="nope"))


def test_scenario_defaults_fill_only_what_was_not_set() -> None:
    assert parse_plan("#sim scenario=slow_first_token", DEFAULTS).first_token_delay == 30.0
    explicit = parse_plan("#sim scenario=slow_first_token first_token_ms=0", DEFAULTS)
    assert explicit.first_token_delay == 0.0
    configured = Plan(scenario="slow_first_token", first_token_delay=0.5)
    assert parse_plan("", configured).first_token_delay == 0.5
    assert parse_plan("#sim scenario=status_429", DEFAULTS).retry_after == 20
    assert parse_plan("#sim scenario=status_429 retry_after=2", DEFAULTS).retry_after == 2
    assert parse_plan("#sim scenario=status_503", DEFAULTS).retry_after is None


def test_scenario_table_is_consistent() -> None:
    required = {
        "ok", "slow_first_token", "no_headers", "stall", "cut", "reset", "midstream_error",
        "malformed", "no_usage", "status_429", "status_500", "status_502", "status_503",
        "status_401", "invalid_json", "byte_split",
    }
    assert required <= set(SCENARIOS)
    for name, scenario in SCENARIOS.items():
        assert scenario.name == name
        assert scenario.description
        if scenario.status is not None:
            assert 400 <= scenario.status <= 599
            assert scenario.stop_after is None and scenario.ending == "complete"
        if scenario.stop_after is not None:
            assert 0.0 <= scenario.stop_after < 1.0 and scenario.ending != "complete"


def test_echo_repeats_prompt_words_with_leading_spaces_and_cycles() -> None:
    prompt = "Hello  brave\nnew world\n#sim tokens=9 tag=x"
    assert token_texts("echo", prompt, 6) == [
        " Hello", " brave", " new", " world", " Hello", " brave",
    ]
    assert token_texts("echo", prompt, 0) == []


def test_echo_without_words_falls_back_to_lorem() -> None:
    assert token_texts("echo", "#sim tokens=3\n  ", 3) == token_texts("lorem", "ignored", 3)


def test_lorem_is_deterministic_and_ignores_the_prompt() -> None:
    first = token_texts("lorem", "a", 500)
    assert first == token_texts("lorem", "b", 500)
    assert first[:3] == [" Lorem", " ipsum", " dolor"]
    assert len(first) == 500 and all(t.startswith(" ") and t.strip() for t in first)


def test_token_texts_rejects_unknown_kinds_and_counts() -> None:
    with pytest.raises(ValueError, match="unknown token kind"):
        token_texts("shout", "x", 1)
    with pytest.raises(ValueError, match="out of range"):
        token_texts("lorem", "x", -1)


def test_prompt_tokens_is_a_ceiling_of_a_quarter_and_at_least_one() -> None:
    assert [prompt_tokens(t) for t in ("", "a", "abcd", "abcde", "x" * 400)] == [1, 1, 1, 2, 100]


def test_plan_from_settings_applies_the_directive_rules() -> None:
    plan = plan_from([("scenario", "slow_first_token"), ("tokens", "5")], DEFAULTS)
    assert (plan.tokens, plan.first_token_delay) == (5, 30.0)
    with pytest.raises(ValueError, match="unknown key"):
        plan_from([("tokens x", "1")], DEFAULTS)
