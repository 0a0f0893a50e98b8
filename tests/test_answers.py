from __future__ import annotations

import pytest

from ares_data.answers import option_letter, parse_answer

CHOICES = ["repel", "attract", "neither"]


@pytest.mark.parametrize(
    ("text", "expected", "rule"),
    [
        ("The answer is (B).", 1, "statement"),
        ("B) because like poles repel", 1, "leading-label"),
        ("(C) neither", 2, "leading-label"),
        ("answer: c", 2, "statement"),
        ("ANSWER IS B", 1, "statement"),
        ("Answer - b.", 1, "statement"),
        ("the answer is option b", 1, "statement"),
        ("The answer is attract.", 1, "statement"),
        ("Like poles repel. The N pole faces the N pole.\nAnswer: A", 0, "statement"),
        ("The answer is (A). No wait, the answer is (B).", 1, "statement"),  # last statement wins
        ("So the answer is repel, not attract.", 0, "statement"),
        ("answer is (B) attract", 1, "statement"),
        ("The correct option is (C).", 2, "statement"),
        ("choice: a", 0, "statement"),
        ("Option B is wrong because like poles repel.", None, "none"),
        ("attract", 1, "option-text"),
        ("  Neither. ", 2, "option-text"),
        ("The magnets will repel each other.", None, "none"),  # no statement: never guessed
        ("Therefore, the correct answer is", None, "none"),  # truncated
        ("The answer is E", None, "none"),  # no option E
        ("The answer choices are many", None, "none"),
        ("", None, "none"),
        ("the answer is b because like poles repel", 1, "statement"),  # lowercase letter, then a word
        ("so the answer is a because", None, "none"),  # "a" there may be the article: not guessed
        ("**Answer:** B", 1, "statement"),  # markdown emphasis, as chat models write it
        ("The answer is **(C) neither**.", 2, "statement"),
        ("*B) attract*", 1, "leading-label"),
    ],
)
def test_parse_answer(text: str, expected: int | None, rule: str) -> None:
    parsed = parse_answer(text, CHOICES)
    assert (parsed.index, parsed.rule) == (expected, rule)


def test_option_text_beats_article_letter() -> None:
    choices = ["a 150-gram cup of cocoa at 50°C", "a 150-gram cup of cocoa at 65°C"]
    assert parse_answer("So the answer is a 150-gram cup of cocoa at 65°C.", choices).index == 1
    # the article "a" before a non-option is not read as option A
    assert parse_answer("the answer is a dog", ["cat", "dog"]).index is None
    assert parse_answer("The answer is a.", ["cat", "dog"]).index == 0


def test_longest_option_wins_and_letters() -> None:
    assert parse_answer("The answer is red apple", ["red", "red apple"]).index == 1
    assert option_letter(2) == "C" and option_letter(None) == ""
    assert parse_answer("B", []).index is None


def test_an_option_with_an_asterisk_still_matches() -> None:
    assert parse_answer("The answer is 2*3.", ["2*3", "5"]).index == 0
