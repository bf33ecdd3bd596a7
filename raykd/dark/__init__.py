"""ADAM dark examples (METHODS.md section 5c): mixed-up negatives and masked positives made in
whole-word space per candidate group, before teacher scoring.

``add_dark_examples`` is the pure per-group function; ``dark_examples_stage`` is the Ray Data CPU
stage; ``write_dark_groups`` is the file job. Importing this package does not import Ray.
"""

from raykd.dark.maker import (
    DARK_KINDS,
    DarkExampleMaker,
    DarkReport,
    GroupOutcome,
    add_dark_examples,
    dark_examples_stage,
    dark_pid,
    iter_dark_groups,
    make_dark_examples,
    split_k,
    write_dark_groups,
)
from raykd.dark.masking import mask_positions, mask_words
from raykd.dark.mixup import interleave_mixup, mixup, span_mixup
from raykd.dark.words import LengthBudget, sentences_of, words_of

__all__ = [
    "DARK_KINDS",
    "DarkExampleMaker",
    "DarkReport",
    "GroupOutcome",
    "LengthBudget",
    "add_dark_examples",
    "dark_examples_stage",
    "dark_pid",
    "interleave_mixup",
    "iter_dark_groups",
    "make_dark_examples",
    "mask_positions",
    "mask_words",
    "mixup",
    "sentences_of",
    "span_mixup",
    "split_k",
    "words_of",
    "write_dark_groups",
]
