"""hwr.pattern: the reading-format automaton accepts exactly what ``re.fullmatch`` accepts (random patterns, every
short string), records the fewest labels to acceptance, and refuses bad patterns with one clear error each
(``re`` is the oracle here only)."""

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwr import pattern
from hwr.errors import InputError

ALPHABET = "01-."  # small, so random strings often match; '-' and '.' are the tricky characters
FORMS = "0123456789-.,"
SHORT = ["".join(p) for n in range(5) for p in itertools.product(ALPHABET, repeat=n)]  # all 341 up to length 4

_LEAVES = ["0", "1", "-", "\\-", "\\.", ".", "\\d", "[01]", "[0-1]", "[^.]", "[\\d-]", "[-0]", "[.]", "[0.-]", "[--0]"]
_QUANT = ["?", "*", "+", "{0}", "{1}", "{2}", "{1,2}", "{0,3}", "{2,}", "{,2}"]


def _patterns() -> st.SearchStrategy[str]:
    """Random patterns of the language, valid for ``re`` as well: leaves, concatenation, alternation, groups and
    quantifiers, never one quantifier straight after another."""
    leaf = st.sampled_from(_LEAVES)

    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        group = st.tuples(st.sampled_from(["(", "(?:"]), inner).map(lambda t: f"{t[0]}{t[1]})")
        atom = st.one_of(leaf, group)
        quantified = st.tuples(atom, st.sampled_from(_QUANT)).map("".join)
        return st.one_of(
            st.lists(st.one_of(atom, quantified), min_size=1, max_size=3).map("".join),
            st.lists(inner, min_size=2, max_size=3).map("|".join),
            quantified,
        )

    return st.recursive(leaf, grow, max_leaves=6)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(_patterns())
def test_accepts_what_re_fullmatch_accepts(text):
    compiled = re.compile(text)  # the generator writes only patterns re takes too
    fsa = pattern.automaton(text, ALPHABET)
    for s in SHORT:
        assert fsa.matches(s) == (compiled.fullmatch(s) is not None), (text, s)
    # need: the shortest accepted string has need[0] characters
    shortest = min((len(s) for s in SHORT if compiled.fullmatch(s)), default=None)
    if shortest is not None:
        assert fsa.need[0] == shortest, (text, fsa.need[0], shortest)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(_patterns(), st.lists(st.text(alphabet=ALPHABET, max_size=9), min_size=5, max_size=5))
def test_longer_strings_agree_with_re(text, strings):
    fsa = pattern.automaton(text, ALPHABET)
    for s in strings:
        assert fsa.matches(s) == (re.fullmatch(text, s) is not None), (text, s)


@pytest.mark.parametrize(
    "text",
    [
        r"\d{5}(-\d{4})?",
        r"^\d{5}$",
        r"\d{1,3}(,\d{3})*(\.\d{2})?",
        r"[0-4-]+",
        r"(?:1|22)*",
        r"[^,]{2}",
        r"1,234\.56",
        r"(|1)2",
        r"[\d.]{2,}",
        r"1{,2}",
    ],
)
def test_reading_formats(text):
    fsa = pattern.automaton(text, FORMS)
    for s in ["12345", "12345-6789", "1,234.56", "123,456", "22122", "4-4-", "", "12", "3.", "1234-567", "1,23"]:
        assert fsa.matches(s) == (re.fullmatch(text, s) is not None), (text, s)


def test_table_need_and_dead_ends():
    fsa = pattern.automaton(r"\d{5}(-\d{4})?", FORMS)
    assert fsa.alphabet == FORMS and all(len(row) == len(FORMS) for row in fsa.table)
    assert fsa.need[0] == 5 and not fsa.accepting[0]
    assert fsa.table[0][FORMS.index("-")] == -1  # no reading starts with '-'
    q = 0
    for ch in "12345":
        q = fsa.table[q][FORMS.index(ch)]
    assert fsa.accepting[q] and fsa.need[q] == 0
    assert fsa.accepts([1, 2, 3, 4, 5]) and not fsa.accepts([1, 2, 3, 4]) and not fsa.accepts([1, 99])
    assert not fsa.matches("1234a")
    # states that can never accept are cut off: after '1' the only way on is a digit, never a separator
    assert all(r == -1 or fsa.need[r] >= 0 for row in fsa.table for r in row)


def test_deterministic_and_immutable():
    a, b = pattern.automaton(r"\d{2,3}", FORMS), pattern.automaton(r"\d{2,3}", FORMS)
    assert a == b and isinstance(a.table, tuple) and isinstance(a.table[0], tuple)


def test_lengths_pattern():
    assert pattern.lengths_pattern([5]) == ".{5}"
    assert pattern.lengths_pattern([9, 5, 5]) == ".{5}|.{9}"
    fsa = pattern.automaton(pattern.lengths_pattern([2, 4]), FORMS)
    assert [fsa.matches(s) for s in ["1", "12", "1-", "123", "1.34"]] == [False, True, True, False, True]
    for bad in ([], [0], [-1], [True], [pattern.MAX_REPEAT + 1]):
        with pytest.raises(InputError, match="lengths must be whole numbers"):
            pattern.lengths_pattern(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("((", "'(' never closed at position 1"),
        ("(12", "add the missing ')'"),
        ("12)", "a ')' without its '('"),
        ("[0-9", "'[' never closed"),
        ("[]", "an empty class"),
        (r"\w", r"unknown escape \w"),
        (r"\D", r"unknown escape \D"),
        ("12\\", "trailing backslash"),
        ("[9-0]", "bad range 9-0"),
        (r"[\d-9]", "bad range"),
        ("*1", "nothing to repeat"),
        ("(+1)", "nothing to repeat"),
        ("1**", "a quantifier after a quantifier"),
        ("1{3,2}", "minimum above its maximum"),
        ("1{x}", "malformed count"),
        ("1{", "malformed count"),
        ("1^2", "'^' inside the pattern"),
        ("(?=1)", "unsupported group"),
        ("", "it is empty"),
        ("a", "this run cannot emit 'a'"),
        ("[0-9x]", "this run cannot emit 'x'"),
        ("[a-z]", "matches none of the characters"),
        ("[^\\d.,-]", "matches none of the characters"),
        ("1{0}2{0}", None),  # the empty string only: accepted (it is a language, if a short one)
        (r"\d{999}", "pattern too large"),
        (r"(\d{100}){100}", "pattern too large"),
        ("(" * 60 + ")" * 60, "nested deeper"),
        ("1" * 2000, "pattern too large"),
    ],
)
def test_bad_patterns(text, message):
    if message is None:
        assert pattern.automaton(text, FORMS).matches("")
        return
    with pytest.raises(InputError, match=re.escape(message)):
        pattern.automaton(text, FORMS)


def test_missing_character_hint_and_alphabet():
    with pytest.raises(InputError, match=r"cannot emit '-'.*train with strings_forms"):
        pattern.automaton(r"\d{5}-\d{4}", pattern.DIGITS, fixes={"-": "train with strings_forms"})
    with pytest.raises(InputError, match=r"cannot emit 'a'.*use only these characters"):
        pattern.automaton("1a", pattern.DIGITS, fixes={"-": "train with strings_forms"})
    with pytest.raises(InputError, match="distinct characters"):
        pattern.automaton("1", "0110")
