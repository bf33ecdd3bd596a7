"""Whole-word text handling for dark examples: words, sentences, counts and length budgets.

Dark examples are edited in discrete space on whitespace words, never inside a word, so a
word-piece tokenizer never sees half a word. A text is its words joined by single spaces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

SENTENCE_END = (".", "!", "?")
_CLOSERS = "\"')]}»”’"


def words_of(text: str) -> list[str]:
    """Whitespace words (any run of whitespace separates; none is empty)."""
    return text.split()


def join_words(words: Sequence[str]) -> str:
    return " ".join(words)


def sentences_of(words: Sequence[str]) -> list[list[str]]:
    """Split a word list into sentences: a sentence ends after a word ending in ``.``, ``!`` or
    ``?`` (closing quotes and brackets looked through). The last sentence may lack an end mark.
    Abbreviations split too; that only makes sentences shorter, never splits a word."""
    out: list[list[str]] = []
    current: list[str] = []
    for word in words:
        current.append(word)
        if word.rstrip(_CLOSERS).endswith(SENTENCE_END):
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def normalize_word(word: str) -> str:
    """Case-folded, with every non-alphanumeric character removed (for query overlap)."""
    return "".join(ch for ch in word.casefold() if ch.isalnum())


def fraction_count(rho: float, n: int) -> int:
    """``round(rho * n)`` with halves rounded up (Python's ``round`` rounds halves to even)."""
    return int(math.floor(rho * n + 0.5))


@lru_cache(maxsize=8)
def load_tokenizer(path: str):
    """A Hugging Face tokenizer from a local path (offline), once per process."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


class LengthBudget:
    """Cuts a word list to the longest prefix of whole words that fits.

    With a tokenizer, the prefix's tokenisation, special tokens included, has at most
    ``max_length`` tokens (``max_length`` defaults to the tokenizer's ``model_max_length``).
    Without one, ``max_length`` (if given) is a budget in words. With neither, ``fit`` keeps
    everything (the maker then caps a dark text at its longest source's word count).
    """

    def __init__(self, tokenizer=None, max_length: int | None = None):
        if isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        if tokenizer is not None and max_length is None:
            max_length = getattr(tokenizer, "model_max_length", None)
            if not isinstance(max_length, int) or max_length > 100_000:
                raise ValueError("the tokenizer has no usable model_max_length; pass max_length")
        if max_length is not None and (isinstance(max_length, bool) or max_length < 1):
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        self.max_length = max_length
        self.special = 0
        if tokenizer is not None:
            self.special = len(self._ids("", special=True))
            if self.max_length <= self.special:
                raise ValueError(
                    f"max_length={self.max_length} leaves no room beside the tokenizer's "
                    f"{self.special} special tokens"
                )

    @property
    def limited(self) -> bool:
        return self.max_length is not None

    def describe(self) -> dict:
        unit = "tokens" if self.tokenizer is not None else "words"
        return {"max_length": self.max_length, "unit": unit if self.limited else None}

    def _ids(self, text: str, special: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special, truncation=False,
                              verbose=False)["input_ids"]

    def n_tokens(self, words: Sequence[str]) -> int:
        """Tokens of the joined words, special tokens included."""
        return len(self._ids(join_words(words), special=True))

    def fit(self, words: Sequence[str]) -> list[str]:
        words = list(words)
        if self.max_length is None:
            return words
        if self.tokenizer is None:
            return words[: self.max_length]
        if self.n_tokens(words) <= self.max_length:
            return words
        room = self.max_length - self.special
        # Every word is at least one token, so no more than `room` words can fit. Estimate the
        # cut from per-word token counts (exact for word-piece tokenizers), then verify.
        head = words[:room]
        per_word = self.tokenizer(head, add_special_tokens=False, truncation=False,
                                  verbose=False)["input_ids"]
        total, k = 0, 0
        for ids in per_word:
            if total + len(ids) > room:
                break
            total += len(ids)
            k += 1
        if self.n_tokens(words[:k]) <= self.max_length:
            return words[:k]
        lo, hi = 0, k - 1  # largest prefix in [lo, hi] that fits; 0 words always fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.n_tokens(words[:mid]) <= self.max_length:
                lo = mid
            else:
                hi = mid - 1
        return words[:lo]

    def fits(self, words: Sequence[str]) -> bool:
        if self.max_length is None:
            return True
        if self.tokenizer is None:
            return len(words) <= self.max_length
        return self.n_tokens(words) <= self.max_length
