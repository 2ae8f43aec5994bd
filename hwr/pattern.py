"""Reading formats: a small regular-expression language over a model's alphabet, compiled to a DFA on label indices.

``automaton(pattern, alphabet)`` parses ``pattern`` and builds a deterministic automaton whose symbols are the
classes of a model (``alphabet[k]`` is the character of class ``k``: ``"0123456789"``, or ``"0123456789-.,"`` for
strings with separators), so a CTC decoder can keep only the readings the pattern accepts
(``hwr.decode.constrained_beam_search``). The pattern always matches the whole reading, as ``re.fullmatch``; a
leading ``^`` and a trailing ``$`` are allowed and change nothing. The language, a subset of Python's ``re`` with
the same meaning:

- literals: the alphabet's characters (``7``, ``-``, ``,``); ``\\.`` ``\\-`` ``\\,`` (a backslash before any
  punctuation is that character); ``.`` any character of the alphabet; ``\\d`` a digit;
- classes: ``[0-9]``, ``[0-4-]``, ``[\\d.]``, ``[^,]`` (complement within the alphabet);
- groups ``( )`` and ``(?: )``, alternation ``|``, quantifiers ``?`` ``*`` ``+`` ``{n}`` ``{n,m}`` ``{n,}``
  ``{,m}`` (counts up to ``MAX_REPEAT``).

Construction: Thompson's NFA (epsilon moves), then the subset construction over the alphabet's symbols (at most
``MAX_STATES`` DFA states); states from which no accepting state can be reached are dropped (their transitions
read ``-1``), and each state records ``need``, the fewest further labels that reach acceptance, which lets a
decoder drop a prefix that the frames left cannot complete. ``lengths_pattern`` writes ``--length`` /
``--lengths``: a length counts characters of the alphabet, separators included (``.{5}``; ``\\d{5}`` for digits
only). Everything a user can get wrong (syntax, a character the model cannot emit, a class that matches none of
the alphabet, a pattern too large) raises ``InputError`` naming the problem and the fix. A class must match a
character, so no pattern that compiles has an empty language. Nothing here uses ``re``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from hwr.errors import InputError

__all__ = [
    "DIGITS",
    "MAX_REPEAT",
    "MAX_STATES",
    "Automaton",
    "automaton",
    "lengths_pattern",
    "parse",
]

DIGITS = "0123456789"
MAX_REPEAT = 256  # the largest count in {n,m}: more characters than any line of digits a model reads
MAX_STATES = 4096  # DFA states (and 16x that many NFA states): beyond this a pattern is refused as too large
MAX_LENGTH = 1000  # characters in a pattern
_MAX_DEPTH = 50  # nested groups
_QUANTIFIERS = "?*+{"


class Sym(NamedTuple):
    """One character of the reading: the single characters ``chars`` and the code-point ``ranges`` it names,
    or (``negate``) every character of the alphabet but those; ``text`` is how the pattern spelled it."""

    chars: frozenset[str]
    ranges: tuple[tuple[int, int], ...]
    negate: bool
    text: str


class Cat(NamedTuple):
    items: tuple  # sequence of nodes, matched one after the other (empty: the empty string)


class Alt(NamedTuple):
    options: tuple  # nodes, any one of them


class Rep(NamedTuple):
    item: object  # a node
    lo: int
    hi: int | None  # None: unbounded


Node = Sym | Cat | Alt | Rep
_DIGIT_RANGE = ((ord("0"), ord("9")),)


class Automaton(NamedTuple):
    """A DFA over the label indices of ``alphabet``: ``table[q][k]`` the state after class ``k`` (``-1``: no
    accepted reading continues so), ``accepting[q]``, ``need[q]`` the fewest further labels to an accepting
    state; state 0 is the start. Immutable; ``pattern`` is the text it was built from."""

    pattern: str
    alphabet: str
    table: tuple[tuple[int, ...], ...]
    accepting: tuple[bool, ...]
    need: tuple[int, ...]

    def accepts(self, labels: Iterable[int]) -> bool:
        """Whether the label sequence (class indices) is a reading the pattern accepts."""
        q = 0
        for k in labels:
            if not 0 <= k < len(self.alphabet):
                return False
            q = self.table[q][k]
            if q < 0:
                return False
        return self.accepting[q]

    def matches(self, text: str) -> bool:
        """Whether ``text`` (characters of the alphabet) is accepted; any other character: False."""
        if any(ch not in self.alphabet for ch in text):
            return False
        return self.accepts(self.alphabet.index(ch) for ch in text)


# ---------------------------------------------------------------------------------------------- parsing


class _Parser:
    """Recursive descent over ``text``; ``offset`` is where ``text`` starts in the pattern the user wrote."""

    def __init__(self, text: str, pattern: str, offset: int) -> None:
        self.text, self.pattern, self.offset, self.i, self.depth = text, pattern, offset, 0, 0

    def fail(self, what: str, fix: str, at: int | None = None) -> InputError:
        where = self.offset + (self.i if at is None else at)
        return InputError(f"bad pattern '{self.pattern}': {what} at position {where}; {fix}")

    def peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.text[j] if j < len(self.text) else ""

    def at_quantifier(self) -> bool:
        return self.peek() != "" and self.peek() in _QUANTIFIERS

    def alt(self) -> Node:
        options = [self.cat()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.cat())
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def cat(self) -> Node:
        items = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.repeat())
        return items[0] if len(items) == 1 else Cat(tuple(items))

    def repeat(self) -> Node:
        if self.at_quantifier():
            raise self.fail(
                f"nothing to repeat before {self.peek()!r}", "put the quantifier after a character or group"
            )
        item = self.atom()
        if self.at_quantifier():
            lo, hi = self.quantifier()
            item = Rep(item, lo, hi)
            if self.at_quantifier():
                raise self.fail("a quantifier after a quantifier", "group the repeated part: (\\d{2})?")
        return item

    def quantifier(self) -> tuple[int, int | None]:
        c, start = self.peek(), self.i
        self.i += 1
        if c != "{":
            return {"?": (0, 1), "*": (0, None), "+": (1, None)}[c]
        end = self.text.find("}", self.i)
        body = self.text[self.i : end] if end >= 0 else ""
        lo, sep, hi = body.partition(",")
        ok = end >= 0 and all(p == "" or (p.isascii() and p.isdigit()) for p in (lo, hi)) and (lo or hi)
        if not ok or (not sep and not lo):
            raise self.fail("a malformed count", "write {n}, {n,m}, {n,} or {,m} with whole numbers", start)
        self.i = end + 1
        n = int(lo) if lo else 0
        m = (int(hi) if hi else None) if sep else n
        if max(n, m or 0) > MAX_REPEAT:
            raise self.fail(f"a count over {MAX_REPEAT}", f"use counts up to {MAX_REPEAT} (pattern too large)", start)
        if m is not None and m < n:
            raise self.fail(f"{{{body}}} has its minimum above its maximum", "write {min,max}", start)
        return n, m

    def atom(self) -> Node:
        c, start = self.peek(), self.i
        self.i += 1
        if c == "(":
            return self.group(start)
        if c == "[":
            return self.char_class(start)
        if c == ".":
            return Sym(frozenset(), (), True, ".")
        if c == "\\":
            chars, ranges = self.escape()
            return Sym(chars, ranges, False, self.text[start : self.i])
        if c in "^$":
            raise self.fail(f"{c!r} inside the pattern", "the pattern always matches the whole reading: drop it", start)
        return Sym(frozenset(c), (), False, c)

    def group(self, start: int) -> Node:
        if self.peek() == "?":
            if self.peek(1) != ":":
                raise self.fail("an unsupported group '(?'", "use ( ) or (?: )", start)
            self.i += 2
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail(f"groups nested deeper than {_MAX_DEPTH}", "flatten the pattern", start)
        inner = self.alt()
        self.depth -= 1
        if self.peek() != ")":
            raise self.fail("'(' never closed", "add the missing ')'", start)
        self.i += 1
        return inner

    def escape(self) -> tuple[frozenset[str], tuple[tuple[int, int], ...]]:
        c = self.peek()
        if not c:
            raise self.fail("a trailing backslash", "escape a character: \\d, \\. or \\-")
        self.i += 1
        if c == "d":
            return frozenset(), _DIGIT_RANGE
        if c.isalnum() or not c.isascii():
            raise self.fail(f"the unknown escape \\{c}", "use \\d for a digit, or a literal character", self.i - 2)
        return frozenset(c), ()

    def class_item(self) -> tuple[frozenset[str], tuple[tuple[int, int], ...], str]:
        """One member of a class: a character or ``\\d``, with its spelling."""
        start, c = self.i, self.peek()
        self.i += 1
        if c == "\\":
            chars, ranges = self.escape()
            return chars, ranges, self.text[start : self.i]
        return frozenset(c), (), c

    def char_class(self, start: int) -> Sym:
        negate = self.peek() == "^"
        self.i += negate
        chars: set[str] = set()
        ranges: list[tuple[int, int]] = []
        while self.peek() != "]":
            if not self.peek():
                raise self.fail("'[' never closed", "add the missing ']'", start)
            a_chars, a_ranges, a = self.class_item()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                _, b_ranges, b = self.class_item()
                if a_ranges or b_ranges or ord(b[-1]) < ord(a[-1]):
                    raise self.fail(f"the bad range {a}-{b}", "write ranges low to high between characters: [0-4]")
                ranges.append((ord(a[-1]), ord(b[-1])))
            else:
                chars |= a_chars
                ranges.extend(a_ranges)
        if self.i == start + 1 + negate:
            raise self.fail("an empty class []", "name at least one character: [0-9]", start)
        self.i += 1
        return Sym(frozenset(chars), tuple(ranges), negate, self.text[start : self.i])


def parse(pattern: str) -> Node:
    """The syntax tree of ``pattern`` (any alphabet): ``Sym``, ``Cat``, ``Alt``, ``Rep`` nodes; syntax errors
    raise ``InputError`` naming the position and the fix. ``automaton`` checks it against a model's alphabet."""
    if not isinstance(pattern, str) or not pattern:
        raise InputError(f"bad pattern '{pattern}': it is empty; give a regular expression such as \\d{{5}}")
    if len(pattern) > MAX_LENGTH:
        raise InputError(f"bad pattern: {len(pattern)} characters, over {MAX_LENGTH}; shorten it (pattern too large)")
    text, offset = pattern, 0
    if text.startswith("^"):
        text, offset = text[1:], 1
    if text.endswith("$") and (len(text) - 1 - len(text[:-1].rstrip("\\"))) % 2 == 0:
        text = text[:-1]  # an unescaped trailing $ (an even number of backslashes before it)
    p = _Parser(text, pattern, offset)
    node = p.alt()
    if p.i < len(text):  # only a ')' stops the top level early
        raise p.fail("a ')' without its '('", "remove it or add the missing '('")
    return node


# ---------------------------------------------------------------------------------------------- automaton


def _resolve(node: Node, alphabet: str, pattern: str, fixes: Mapping[str, str]) -> Node:
    """``node`` with each ``Sym`` turned into the set of class indices it matches (``Sym.chars`` then holds
    indices); a character the alphabet lacks, or a class that matches none of it, raises ``InputError``."""
    if isinstance(node, Cat | Alt):
        return type(node)(tuple(_resolve(n, alphabet, pattern, fixes) for n in node[0]))
    if isinstance(node, Rep):
        return Rep(_resolve(node.item, alphabet, pattern, fixes), node.lo, node.hi)
    if not node.negate:
        for ch in sorted(node.chars):
            if ch not in alphabet:
                fix = fixes.get(ch) or f"use only these characters, \\d, '.' and classes of them: {alphabet}"
                raise InputError(f"bad pattern '{pattern}': this run cannot emit {ch!r} (it reads {alphabet}); {fix}")
    named = {k for k, ch in enumerate(alphabet) if ch in node.chars or any(a <= ord(ch) <= b for a, b in node.ranges)}
    members = set(range(len(alphabet))) - named if node.negate else named
    if not members:
        raise InputError(
            f"bad pattern '{pattern}': {node.text} matches none of the characters this run reads ({alphabet}); "
            "name at least one of them"
        )
    return Sym(frozenset(members), (), False, node.text)


class _NFA:
    """Thompson's construction: ``eps[s]`` epsilon moves, ``moves[s]`` ``(symbols, target)`` pairs."""

    def __init__(self, limit: int, pattern: str) -> None:
        self.eps: list[list[int]] = []
        self.moves: list[list[tuple[frozenset[int], int]]] = []
        self.limit, self.pattern = limit, pattern

    def state(self) -> int:
        if len(self.eps) >= self.limit:
            raise InputError(
                f"bad pattern '{self.pattern}': pattern too large (over {self.limit} automaton states); use "
                "smaller counts in {n,m} or fewer alternatives"
            )
        self.eps.append([])
        self.moves.append([])
        return len(self.eps) - 1

    def build(self, node: Node) -> tuple[int, int]:
        """The fragment of ``node``: ``(entry, exit)`` states."""
        if isinstance(node, Sym):
            s, e = self.state(), self.state()
            self.moves[s].append((node.chars, e))
            return s, e
        if isinstance(node, Alt):
            s, e = self.state(), self.state()
            for option in node.options:
                a, b = self.build(option)
                self.eps[s].append(a)
                self.eps[b].append(e)
            return s, e
        if isinstance(node, Cat):
            s = cur = self.state()
            for item in node.items:
                a, b = self.build(item)
                self.eps[cur].append(a)
                cur = b
            return s, cur
        return self.repeat(node)

    def repeat(self, node: Rep) -> tuple[int, int]:
        s = cur = self.state()
        for _ in range(node.lo):  # the required copies, in a row
            a, b = self.build(node.item)
            self.eps[cur].append(a)
            cur = b
        e = self.state()
        if node.hi is None:  # a loop: any number more
            a, b = self.build(node.item)
            self.eps[cur] += [a, e]
            self.eps[b] += [a, e]
            return s, e
        for _ in range(node.hi - node.lo):  # optional copies, each may end the repeat
            a, b = self.build(node.item)
            self.eps[cur] += [a, e]
            cur = b
        self.eps[cur].append(e)
        return s, e

    def closure(self, states: Iterable[int]) -> frozenset[int]:
        seen, stack = set(states), list(states)
        while stack:
            for t in self.eps[stack.pop()]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(seen)


def _determinise(nfa: _NFA, start: int, end: int, k: int) -> tuple[list[list[int]], list[bool]]:
    """The subset construction: DFA transitions ``(states, k)`` (``-1``: none) and accepting flags."""
    first = nfa.closure([start])
    index, order, table = {first: 0}, [first], []
    for subset in order:  # grows while it is walked
        row = []
        for sym in range(k):
            targets = [t for s in subset for syms, t in nfa.moves[s] if sym in syms]
            if not targets:
                row.append(-1)
                continue
            nxt = nfa.closure(targets)
            if nxt not in index:
                if len(order) >= MAX_STATES:
                    raise InputError(
                        f"bad pattern '{nfa.pattern}': pattern too large (over {MAX_STATES} automaton states); use "
                        "smaller counts in {n,m} or fewer alternatives"
                    )
                index[nxt] = len(order)
                order.append(nxt)
            row.append(index[nxt])
        table.append(row)
    return table, [end in subset for subset in order]


def _need(table: list[list[int]], accepting: list[bool]) -> list[int]:
    """Fewest labels from each state to an accepting one (breadth first from the accepting states backwards);
    ``-1`` where none can be reached."""
    back: list[list[int]] = [[] for _ in table]
    for q, row in enumerate(table):
        for r in row:
            if r >= 0:
                back[r].append(q)
    need = [0 if a else -1 for a in accepting]
    frontier = [q for q, a in enumerate(accepting) if a]
    while frontier:
        nxt = []
        for r in frontier:
            for q in back[r]:
                if need[q] < 0:
                    need[q] = need[r] + 1
                    nxt.append(q)
        frontier = nxt
    return need


def automaton(pattern: str, alphabet: str, *, fixes: Mapping[str, str] | None = None) -> Automaton:
    """The DFA of ``pattern`` over ``alphabet`` (class ``k`` is ``alphabet[k]``). ``fixes`` maps a character the
    alphabet lacks to the fix a user reads when the pattern names it (e.g. how to train a model that emits it)."""
    if not alphabet or len(set(alphabet)) != len(alphabet):
        raise InputError(f"an alphabet is a string of distinct characters, one per class; got {alphabet!r}")
    tree = _resolve(parse(pattern), alphabet, pattern, fixes or {})
    nfa = _NFA(16 * MAX_STATES, pattern)
    start, end = nfa.build(tree)
    table, accepting = _determinise(nfa, start, end, len(alphabet))
    need = _need(table, accepting)  # need[0] >= 0: every class names a character, so no language is empty
    live = tuple(tuple(r if r >= 0 and need[r] >= 0 else -1 for r in row) for row in table)
    return Automaton(pattern, alphabet, live, tuple(accepting), tuple(need))


def lengths_pattern(lengths: Sequence[int]) -> str:
    """The pattern of ``--length N`` / ``--lengths 5,9``: any reading of one of these many characters of the
    alphabet (``.{5}|.{9}``; separators count as characters)."""
    if not lengths or any(not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_REPEAT for n in lengths):
        raise InputError(f"lengths must be whole numbers from 1 to {MAX_REPEAT}, got {list(lengths)}; e.g. 5 or 5,9")
    return "|".join(f".{{{n}}}" for n in sorted(set(lengths)))
