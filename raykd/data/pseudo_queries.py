"""Pseudo-queries from corpus passages, with no model (inverse cloze), deterministic under a seed.

A pseudo-query is one sentence of a passage (or its title); the passage it is paired with is
the passage with that sentence removed, so the pair cannot be matched by copying text.

Rules (:data:`RULES`):

- ``"sentence"``: one eligible sentence drawn with a per-passage RNG seeded from a stable hash
  of (seed, pid), so the choice does not depend on which other passages are read;
- ``"first_sentence"``: the first sentence, when it is eligible;
- ``"title"``: the title (no word bounds); the passage text is then the text alone.

For the sentence rules the paired text is ``"{title} {rest}"`` (the BEIR convention of
:func:`raykd.data.records.passage_text`).

Sentence splitting: a break follows ``.``, ``!`` or ``?`` (optionally closed by quotes or
brackets) when whitespace and then an upper-case letter or a digit come next, except after an
abbreviation: a word made of single letters each followed by a period ("e.g.", "i.e.", "U.S.",
the initial "J.") or one of :data:`ABBREVIATIONS` ("Fig.", "Dr.", "et al.", "No.", ...).
A sentence is eligible when it has ``min_words`` to ``max_words`` whitespace-separated words
and occurs once in the passage (so it appears nowhere in the remaining text).
"""

from __future__ import annotations

import hashlib
import heapq
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from raykd.data.records import passage_text
from raykd.errors import ConfigError

PSEUDO_PREFIX = "pseudo:"

ABBREVIATIONS = frozenset(
    "al. approx. ca. cf. dr. eq. eqs. fig. figs. jr. mr. mrs. ms. no. nos. p. pp. prof. ref. "
    "refs. sec. sr. st. tab. vol. vs.".split()
)

# Skip reasons (the keys of PseudoQueryReport.skipped).
NO_ELIGIBLE_SENTENCE = "no_eligible_sentence"  # none within the word bounds (or all repeated)
EMPTY_REMAINDER = "empty_remainder"  # removing the query would leave no text
EMPTY_TITLE = "empty_title"

_CLOSERS = "\"'\u201d\u2019)]"
_BREAK = re.compile(r"[.!?]+[" + re.escape(_CLOSERS) + r"]*(?=\s+\S)")
_INITIALS = re.compile(r"(?:[^\W\d_]\.)+")
_TRAILING = string.punctuation + string.whitespace


@dataclass(frozen=True)
class PseudoQuery:
    """A query made from passage ``pid``; ``passage_text`` is the passage without the query."""

    qid: str
    text: str
    pid: str
    passage_text: str


@dataclass
class PseudoQueryReport:
    """What :func:`make_pseudo_queries` did: passages read and sampled, queries made, skips."""

    rule: str
    seed: int
    read: int = 0
    sampled: int = 0
    made: int = 0
    skipped: Counter = field(default_factory=Counter)
    excluded: int = 0

    def summary(self) -> str:
        skips = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        return (f"pseudo-queries (rule={self.rule}, seed={self.seed}): {self.made} made from "
                f"{self.sampled} sampled of {self.read} passages; skipped "
                f"{sum(self.skipped.values())}" + (f" ({skips})" if skips else "")
                + f"; excluded {self.excluded} equal to a labelled query")


class _Skip(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def stable_hash(seed: int, pid: str, purpose: str = "sample") -> int:
    """A 64-bit hash of (seed, pid), the same in every process (unlike ``hash()``)."""
    digest = hashlib.blake2b(f"{seed}\x00{pid}".encode(), digest_size=8,
                             person=purpose.encode()[:16])
    return int.from_bytes(digest.digest(), "big")


def normalize_text(text: str) -> str:
    """Lower-case, whitespace collapsed, trailing punctuation stripped (for exclusion)."""
    return " ".join(text.lower().split()).rstrip(_TRAILING)


def _is_abbreviation(word: str) -> bool:
    word = word.lstrip("([{\"'\u201c\u2018")
    return word.lower() in ABBREVIATIONS or bool(_INITIALS.fullmatch(word))


def split_sentences(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` spans of the sentences of ``text`` (the rule is in the module docstring)."""
    spans, start = [], 0
    for m in _BREAK.finditer(text):
        nxt = text[m.end():].lstrip()[:1]
        if not (nxt.isupper() or nxt.isdigit()):
            continue
        if m.group().rstrip(_CLOSERS) == ".":
            words = text[start:m.end()].split()
            if words and _is_abbreviation(words[-1]):
                continue
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:  # strip the spans, drop empty ones
        chunk = text[a:b]
        if chunk.strip():
            a += len(chunk) - len(chunk.lstrip())
            b -= len(chunk) - len(chunk.rstrip())
            out.append((a, b))
    return out


def _eligible(text: str, spans: list[tuple[int, int]], min_words: int,
              max_words: int) -> list[tuple[int, int]]:
    flat = " ".join(text.split())
    keep = []
    for a, b in spans:
        sentence = " ".join(text[a:b].split())
        if min_words <= len(sentence.split()) <= max_words and flat.count(sentence) == 1:
            keep.append((a, b))
    return keep


def _cut(title: str, text: str, span: tuple[int, int]) -> tuple[str, str]:
    a, b = span
    rest = (text[:a].rstrip() + " " + text[b:].lstrip()).strip()
    if not rest:
        raise _Skip(EMPTY_REMAINDER)
    return " ".join(text[a:b].split()), passage_text(title, rest)


def _sentence_rule(pid: str, title: str, text: str, seed: int, min_words: int,
                   max_words: int) -> tuple[str, str]:
    spans = _eligible(text, split_sentences(text), min_words, max_words)
    if not spans:
        raise _Skip(NO_ELIGIBLE_SENTENCE)
    rng = random.Random(stable_hash(seed, pid, "sentence"))
    return _cut(title, text, spans[rng.randrange(len(spans))])


def _first_sentence_rule(pid: str, title: str, text: str, seed: int, min_words: int,
                         max_words: int) -> tuple[str, str]:
    spans = split_sentences(text)[:1]
    spans = _eligible(text, spans, min_words, max_words)
    if not spans:
        raise _Skip(NO_ELIGIBLE_SENTENCE)
    return _cut(title, text, spans[0])


def _title_rule(pid: str, title: str, text: str, seed: int, min_words: int,
                max_words: int) -> tuple[str, str]:
    query = " ".join(title.split())
    if not query:
        raise _Skip(EMPTY_TITLE)
    if not text.strip():
        raise _Skip(EMPTY_REMAINDER)
    return query, text.strip()


Rule = Callable[[str, str, str, int, int, int], tuple[str, str]]
RULES: dict[str, Rule] = {
    "sentence": _sentence_rule,
    "first_sentence": _first_sentence_rule,
    "title": _title_rule,
}


def sample_passages(pids: Iterable[str], count: int | None, seed: int) -> list[str]:
    """``count`` distinct pids with the smallest stable hash of (seed, pid), in that order.

    Independent of input order; all pids (ranked) when ``count`` is None or >= their number.
    """
    unique = set(pids)
    key = _rank_key(seed)
    if count is None or count >= len(unique):
        return sorted(unique, key=key)
    return heapq.nsmallest(count, unique, key=key)


def _rank_key(seed: int) -> Callable[[str], tuple[int, str]]:
    return lambda pid: (stable_hash(seed, pid), pid)


def _validate(count, rule: str, min_words: int, max_words: int, exclude_texts) -> None:
    if rule not in RULES:
        raise ConfigError("data.pseudo.rule",
                          f"unknown rule {rule!r}; known rules: {', '.join(sorted(RULES))}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or count < 1):
        raise ConfigError("data.pseudo.count", f"must be a positive integer or null, got {count!r}")
    for name, value in (("min_words", min_words), ("max_words", max_words)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"data.pseudo.{name}", f"must be a positive integer, got {value!r}")
    if min_words > max_words:
        raise ConfigError("data.pseudo.min_words",
                          f"min_words ({min_words}) is larger than max_words ({max_words})")
    if isinstance(exclude_texts, (str, Mapping)):
        raise TypeError("exclude_texts must be an iterable of query texts "
                        "(e.g. queries.values()), not a string or a mapping")


def make_pseudo_queries(passages: Iterable[tuple[str, str, str]], *, count: int | None,
                        rule: str = "sentence", seed: int = 13, min_words: int = 5,
                        max_words: int = 40, exclude_texts: Iterable[str] = ()
                        ) -> tuple[list[PseudoQuery], PseudoQueryReport]:
    """Pseudo-queries from a sample of ``count`` passages ``(pid, title, text)``.

    The sample is :func:`sample_passages` (read in one pass, memory bounded by ``count``).
    Skipped or excluded passages are not replaced, so at most ``count`` queries come back,
    ranked as sampled. A query whose :func:`normalize_text` equals that of a text in
    ``exclude_texts`` (pass every labelled query of every split) is dropped and counted.
    Raises ConfigError naming the field for a bad rule, count or word bounds.
    """
    _validate(count, rule, min_words, max_words, exclude_texts)
    report = PseudoQueryReport(rule=rule, seed=seed)
    excluded = {normalize_text(t) for t in exclude_texts}
    key = _rank_key(seed)

    def read() -> Iterable[tuple[str, str, str]]:
        for row in passages:
            report.read += 1
            yield row

    rank = lambda row: key(row[0])  # noqa: E731
    chosen = sorted(read(), key=rank) if count is None else heapq.nsmallest(count, read(), rank)
    report.sampled = len(chosen)
    make, out, seen = RULES[rule], [], set()
    for pid, title, text in chosen:
        pid = str(pid)
        if pid in seen:
            raise ValueError(f"duplicate pid {pid!r} in the passages")
        seen.add(pid)
        try:
            query, rest = make(pid, title or "", text or "", seed, min_words, max_words)
        except _Skip as skip:
            report.skipped[skip.reason] += 1
            continue
        if normalize_text(query) in excluded:
            report.excluded += 1
            continue
        out.append(PseudoQuery(qid=PSEUDO_PREFIX + pid, text=query, pid=pid, passage_text=rest))
    report.made = len(out)
    return out, report
