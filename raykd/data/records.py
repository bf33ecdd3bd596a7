"""Record shapes shared across raykd: passage text, the candidate group contract, arrow schemas.

Candidate group (DESIGN.md section 3), one per query::

    qid:            str               the query id
    query:          str               the query text (non-empty)
    pids:           list[str]         candidate passage ids (strings everywhere)
    texts:          list[str]         candidate passage texts (non-empty), aligned with pids
    labels:         list[int]         1 for a labelled positive, else 0
    teacher_scores: list[float]       optional; finite; aligned with pids
    kinds:          list[str]         optional; each one of KINDS
    provenance:     list[str]         optional; one JSON string per candidate: "" for an original
                                      candidate, a JSON object for a generated one (a dark
                                      example), e.g. {"sources": [pos_pid, neg_pid], "ratio": 0.3,
                                      "strategy": "span"}

All lists have the same length, at least 1. No other keys are allowed: a field a writer could
not store would otherwise be dropped without a word.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pyarrow as pa

from raykd.data.validation import (
    BAD_VALUE,
    MALFORMED,
    data_error,
    require_fields,
    require_finite,
    require_id,
    require_text,
)

KINDS = ("pos", "neg", "dark_mix", "dark_mask", "source")  # source: a pseudo-query's passage
REQUIRED_GROUP_FIELDS = ("qid", "query", "pids", "texts", "labels")
OPTIONAL_GROUP_FIELDS = ("teacher_scores", "kinds", "provenance")
GROUP_FIELDS = REQUIRED_GROUP_FIELDS + OPTIONAL_GROUP_FIELDS

CANDIDATE_GROUP_SCHEMA = pa.schema(
    [
        pa.field("qid", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("pids", pa.list_(pa.string()), nullable=False),
        pa.field("texts", pa.list_(pa.string()), nullable=False),
        pa.field("labels", pa.list_(pa.int32()), nullable=False),
        pa.field("teacher_scores", pa.list_(pa.float64()), nullable=True),
        pa.field("kinds", pa.list_(pa.string()), nullable=True),
        pa.field("provenance", pa.list_(pa.string()), nullable=True),
    ]
)

CORPUS_SCHEMA = pa.schema(
    [
        pa.field("pid", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]
)

QUERIES_SCHEMA = pa.schema(
    [pa.field("qid", pa.string(), nullable=False), pa.field("query", pa.string(), nullable=False)]
)


def passage_text(title: str, text: str) -> str:
    """BEIR convention: ``"{title} {text}"`` stripped when there is a title, else ``text``."""
    return f"{title} {text}".strip() if title else text


def _as_list(value, path, line, field: str) -> list:
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy arrays from Ray batches
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise data_error(
            path, line, field, f"expected a list, got {type(value).__name__}", BAD_VALUE
        )
    return value


def normalize_group(group: Mapping, path=None, line: int | None = None) -> dict:
    """Validate a candidate group and return it as a plain dict of Python lists.

    Optional fields appear only when present and not None. Raises DataError naming
    ``path``, ``line`` and the field (with the candidate index, e.g. ``texts[3]``).
    """
    path = "<group>" if path is None else path
    if not isinstance(group, Mapping):
        raise data_error(
            path,
            line,
            None,
            f"a candidate group must be an object, got {type(group).__name__}",
            MALFORMED,
        )
    extra = sorted(set(group) - set(GROUP_FIELDS))
    if extra:
        raise data_error(
            path,
            line,
            extra[0],
            f"unknown field; a candidate group has only {', '.join(GROUP_FIELDS)}",
            MALFORMED,
        )
    require_fields(group, REQUIRED_GROUP_FIELDS, path, line)
    out = {
        "qid": require_id(group["qid"], path, line, "qid"),
        "query": require_text(group["query"], path, line, "query"),
    }
    pids = _as_list(group["pids"], path, line, "pids")
    if not pids:
        raise data_error(path, line, "pids", "a group needs at least one candidate", BAD_VALUE)
    n = len(pids)
    out["pids"] = [require_id(p, path, line, f"pids[{i}]") for i, p in enumerate(pids)]
    lists = {"texts": group["texts"], "labels": group["labels"]}
    for name in OPTIONAL_GROUP_FIELDS:
        if group.get(name) is not None:
            lists[name] = group[name]
    for name, value in lists.items():
        value = _as_list(value, path, line, name)
        if len(value) != n:
            raise data_error(
                path, line, name, f"has {len(value)} entries but pids has {n}", BAD_VALUE
            )
        lists[name] = value
    out["texts"] = [
        require_text(t, path, line, f"texts[{i}]") for i, t in enumerate(lists["texts"])
    ]
    labels = []
    for i, label in enumerate(lists["labels"]):
        if isinstance(label, bool) or label not in (0, 1) or not isinstance(label, int):
            raise data_error(
                path, line, f"labels[{i}]", f"label must be 0 or 1, got {label!r}", BAD_VALUE
            )
        labels.append(int(label))
    out["labels"] = labels
    if "teacher_scores" in lists:
        out["teacher_scores"] = [
            require_finite(s, path, line, f"teacher_scores[{i}]")
            for i, s in enumerate(lists["teacher_scores"])
        ]
    if "kinds" in lists:
        for i, kind in enumerate(lists["kinds"]):
            if kind not in KINDS:
                raise data_error(
                    path,
                    line,
                    f"kinds[{i}]",
                    f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}",
                    BAD_VALUE,
                )
        out["kinds"] = list(lists["kinds"])
    if "provenance" in lists:
        out["provenance"] = [
            _provenance(p, path, line, f"provenance[{i}]")
            for i, p in enumerate(lists["provenance"])
        ]
    return out


def _provenance(value, path, line, field: str) -> str:
    """``""`` or a JSON object, as a string."""
    if not isinstance(value, str):
        raise data_error(
            path, line, field, f"provenance must be a string, got {type(value).__name__}", BAD_VALUE
        )
    if value == "":
        return value
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        raise data_error(
            path, line, field, f"provenance must be \"\" or a JSON object, got {value[:80]!r}",
            BAD_VALUE,
        )
    return value


def validate_group(group: Mapping, path=None, line: int | None = None) -> None:
    """Check a candidate group against the contract; raise DataError naming path, line, field.

    Equal list lengths, at least one candidate, string ids, labels in {0, 1}, finite teacher
    scores, non-empty query and texts, known kinds, provenance ``""`` or a JSON object, no unknown
    fields.
    """
    normalize_group(group, path, line)
