"""Hofstatter et al. teacher-score TSV (Margin-MSE training files, METHODS.md 6.2).

- text form: ``score_pos<TAB>score_neg<TAB>query<TAB>passage_pos<TAB>passage_neg``
- id form:   ``score_pos<TAB>score_neg<TAB>qid<TAB>pid_pos<TAB>pid_neg``

Rows read as ``{"score_pos", "score_neg", "query", "passage_pos", "passage_neg"}`` or
``{"score_pos", "score_neg", "qid", "pid_pos", "pid_neg"}``; scores are floats, NaN and +-inf
are rejected. Scores are written with ``repr`` so they read back bit for bit.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping

from raykd.data.lines import iter_raw_lines, open_binary, split_columns
from raykd.data.msmarco import _require_ids_form, _write_tsv, check_triple_values, triple_columns
from raykd.data.skips import resolve_policy
from raykd.data.validation import MISSING_FIELD, data_error, format_score, require_finite
from raykd.errors import DataError

SCORE_COLUMNS = ("score_pos", "score_neg")


def hofstatter_columns(form: str) -> tuple[str, ...]:
    return SCORE_COLUMNS + triple_columns(form)


def iter_hofstatter(
    path,
    form: str = "text",
    on_error="raise",
    report=None,
    known_pids: Container[str] | None = None,
    known_qids: Container[str] | None = None,
) -> Iterator[dict]:
    """Stream a teacher-score TSV. With ``form="ids"``, ``known_pids`` / ``known_qids`` check
    every id against a collection / query set (an absent id is a DataError)."""
    columns = hofstatter_columns(form)
    _require_ids_form(form, known_pids, known_qids)
    policy = resolve_policy(on_error, report, path)
    with open_binary(path) as fobj:
        for line, raw in iter_raw_lines(fobj, path):
            try:
                row: dict = dict(zip(columns, split_columns(raw, path, line, columns), strict=True))
                for name in SCORE_COLUMNS:
                    row[name] = require_finite(row[name], path, line, name, allow_str=True)
                check_triple_values(row, form, path, line, known_pids, known_qids)
            except DataError as err:
                policy.handle(err)
                continue
            yield row
    policy.finish()


def write_hofstatter(path, rows: Iterable[Mapping], form: str = "text") -> int:
    """Write teacher-score rows (dicts with the column names above); returns the row count."""
    columns = hofstatter_columns(form)

    def cells():
        for n, row in enumerate(rows, start=1):
            for name in columns:
                if row.get(name) is None:
                    raise data_error(path, n, name, "missing field", MISSING_FIELD)
            scores = [format_score(require_finite(row[c], path, n, c)) for c in SCORE_COLUMNS]
            rest = check_triple_values({c: row[c] for c in columns[2:]}, form, path, n)
            yield (*scores, *(rest[c] for c in columns[2:]))

    return _write_tsv(path, cells(), columns)
