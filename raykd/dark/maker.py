"""ADAM dark examples per candidate group: the pure function, the Ray Data stage, the file job.

For each query, ``k`` dark examples are appended after the original candidates:
``round(k * mix_fraction)`` (halves up) mix-ups of a positive into a hard negative, the rest
masked positives. Each gets label 0, kind ``dark_mix`` / ``dark_mask``, pid
``dark:<kind>:<qid>:<i>`` (``i`` counts within the kind) and a JSON provenance record; the
original candidates get kinds ``pos`` / ``neg`` from their labels when the group had none, and
provenance ``""``. Dark examples are soft-label-only: the trainer keeps them out of the
positives and of the hard-label loss through ``kinds``.

Randomness comes from one generator per query, seeded by ``(spec.seed, qid)`` (see
:func:`raykd.negatives.sampling.query_rng`), so a group gets the same dark examples whatever the
batch, order or shard it is processed in. The positive is drawn among the labelled positives;
mix-ups take the group's negatives in an order drawn by the same generator.

Lengths: source texts are cut to the budget first (so edits land in the part a model sees), and
every dark text is cut again to whole words that fit (see :class:`LengthBudget`). With no budget
at all, a dark text is capped at its longest source's word count.

Groups left as they are (counted in :class:`DarkReport`): ``no_positive`` (no labelled
positive), ``already_dark`` (the group already holds dark examples). A group with a positive but
no negative gets its masked positives and no mix-up (``no_negative``). A single dark example
that cannot be made is counted in ``dropped``: ``empty_after_truncation``, ``too_short`` (a
one-word positive with deletion) or ``duplicate`` (its text equals a candidate's or an earlier
dark example's after a few draws). A group that already has teacher scores is an error: dark
examples must be made before teacher scoring.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from raykd.config import DarkSpec
from raykd.dark.masking import mask_words
from raykd.dark.mixup import mixup
from raykd.dark.words import LengthBudget, fraction_count, join_words, words_of
from raykd.data.records import CANDIDATE_GROUP_SCHEMA, GROUP_FIELDS, normalize_group
from raykd.negatives.sampling import query_rng

DARK_KINDS = ("dark_mix", "dark_mask")
DARK_PID_PREFIX = "dark:"
SKIP_REASONS = ("no_positive", "no_negative", "already_dark")
DROP_REASONS = ("empty_after_truncation", "too_short", "duplicate")
_TRIES = 3  # draws per dark example before a duplicate text is given up
_RNG_SALT = "adam-dark\x1f"
_EXAMPLE_QIDS = 5


def dark_pid(kind: str, qid: str, i: int) -> str:
    return f"{DARK_PID_PREFIX}{kind}:{qid}:{i}"


def split_k(spec: DarkSpec) -> tuple[int, int]:
    """(mix-ups, masks) per query."""
    n_mix = min(spec.k, fraction_count(spec.mix_fraction, spec.k))
    return n_mix, spec.k - n_mix


@dataclass(frozen=True)
class GroupOutcome:
    """What happened to one group: dark examples made by kind, query-level skip reasons and
    dark examples not made (reason, count)."""

    qid: str
    made: tuple[tuple[str, int], ...] = ()
    skipped: tuple[str, ...] = ()
    dropped: tuple[tuple[str, int], ...] = ()


@dataclass
class DarkReport:
    """Counts over the groups seen: ``queries``; ``with_dark`` (queries that got at least one);
    ``dark`` (kind -> examples); ``skipped`` (reason -> queries; the group is kept);
    ``dropped`` (reason -> dark examples not made); ``examples`` (reason -> a few qids).

    A Ray stage attaches a remote source, drained on read (read after consuming the dataset);
    each qid counts once even if Ray re-runs a batch."""

    queries: int = 0
    with_dark: int = 0
    dark: Counter = field(default_factory=lambda: Counter(dict.fromkeys(DARK_KINDS, 0)))
    skipped: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    _sources: list = field(default_factory=list, repr=False)

    def add(self, outcome: GroupOutcome) -> None:
        self.queries += 1
        made = dict(outcome.made)
        self.with_dark += int(sum(made.values()) > 0)
        self.dark.update(made)
        for reason in outcome.skipped:
            self.skipped[reason] += 1
            qids = self.examples.setdefault(reason, [])
            if len(qids) < _EXAMPLE_QIDS:
                qids.append(outcome.qid)
        for reason, n in outcome.dropped:
            self.dropped[reason] += n

    def attach(self, fetch) -> None:
        self._sources.append(fetch)

    def drain(self) -> DarkReport:
        for fetch in self._sources:
            for outcome in fetch():
                self.add(outcome)
        return self

    def as_dict(self) -> dict:
        self.drain()
        return {
            "queries": self.queries,
            "with_dark": self.with_dark,
            "dark": dict(self.dark),
            "skipped": dict(self.skipped),
            "dropped": dict(self.dropped),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }

    def summary(self) -> str:
        d = self.as_dict()
        dark = ", ".join(f"{k}: {v}" for k, v in sorted(d["dark"].items()))
        out = f"{d['queries']} queries, {d['with_dark']} with dark examples ({dark})"
        if d["skipped"]:
            out += "; skipped " + ", ".join(
                f"{k}: {v} (e.g. {d['examples'].get(k, [])})" for k, v in sorted(d["skipped"].items())
            )
        if d["dropped"]:
            out += "; not made " + ", ".join(f"{k}: {v}" for k, v in sorted(d["dropped"].items()))
        return out


def _check_spec(spec: DarkSpec) -> None:
    token = spec.mask_token
    if token is not None and (not token or words_of(token) != [token]):
        raise ValueError(f"mask_token must be one word without whitespace, got {token!r}")


def _provenance(sources: list[str], strategy: str, ratio: float, seed: int, **info) -> str:
    return json.dumps(
        {"sources": sources, "strategy": strategy, "ratio": ratio, "seed": seed, **info},
        ensure_ascii=False,
    )


def make_dark_examples(
    group: Mapping, spec: DarkSpec, tokenizer=None, max_length: int | None = None,
    *, budget: LengthBudget | None = None,
) -> tuple[dict, GroupOutcome]:
    """The group with its dark examples appended (a new dict; the input is not changed) and
    what was done. ``tokenizer`` is a Hugging Face tokenizer or a path to one."""
    _check_spec(spec)
    if budget is None:
        budget = LengthBudget(tokenizer, max_length)
    group = normalize_group(group)
    qid = group["qid"]
    if group.get("teacher_scores") is not None:
        raise ValueError(
            f"query {qid!r} already has teacher_scores: dark examples must be added before "
            "teacher scoring (their scores would be missing)"
        )
    n = len(group["pids"])
    kinds = group.get("kinds") or ["pos" if label else "neg" for label in group["labels"]]
    if any(k in DARK_KINDS for k in kinds) or any(
        p.startswith(DARK_PID_PREFIX) for p in group["pids"]
    ):
        return group, GroupOutcome(qid, skipped=("already_dark",))
    positives = [i for i in range(n) if group["labels"][i] == 1]
    negatives = [i for i in range(n) if group["labels"][i] == 0]
    if not positives:
        return group, GroupOutcome(qid, skipped=("no_positive",))

    n_mix, n_mask = split_k(spec)
    skipped: list[str] = []
    if n_mix and not negatives:
        skipped.append("no_negative")
        n_mix = 0
    rng = query_rng(spec.seed, _RNG_SALT + qid)
    fitted: dict[int, list[str]] = {}

    def source_words(i: int) -> list[str]:
        if i not in fitted:
            fitted[i] = budget.fit(words_of(group["texts"][i]))
        return fitted[i]

    dark: list[tuple[str, int, str, str]] = []  # (kind, slot, text, provenance)
    made: Counter = Counter()
    dropped: Counter = Counter()
    neg_order = [negatives[int(j)] for j in rng.permutation(len(negatives))] if n_mix else []
    plans = [("dark_mix", i) for i in range(n_mix)] + [("dark_mask", i) for i in range(n_mask)]

    def attempt(kind: str, i: int) -> tuple[str, str] | str:
        """(text, provenance) of one dark example, or the reason it cannot be made."""
        pos = positives[int(rng.integers(len(positives)))]
        pos_words = source_words(pos)
        if kind == "dark_mix":
            neg = neg_order[i % len(neg_order)]
            neg_words = source_words(neg)
            if not neg_words or not pos_words:
                return "empty_after_truncation"
            words, info = mixup(neg_words, pos_words, spec.rho_mix, spec.mix_strategy, rng)
            sources = [group["pids"][pos], group["pids"][neg]]
            longest = max(len(neg_words), len(pos_words))
            strategy, ratio = spec.mix_strategy, spec.rho_mix
        else:
            if not pos_words:
                return "empty_after_truncation"
            words, info = mask_words(
                pos_words, spec.rho_mask, rng, spec.mask_token, spec.mask_strategy, group["query"]
            )
            if not info["positions"]:
                return "too_short"  # one word: deleting it would leave nothing
            info["mask_token"] = spec.mask_token
            sources, longest = [group["pids"][pos]], len(pos_words)
            strategy, ratio = spec.mask_strategy, spec.rho_mask
        words = budget.fit(words) if budget.limited else words[:longest]
        if not words:
            return "empty_after_truncation"
        info["words"] = len(words)
        return join_words(words), _provenance(sources, strategy, ratio, spec.seed, **info)

    seen = {join_words(words_of(t)) for t in group["texts"]}
    for kind, i in plans:
        for _ in range(_TRIES):
            result = attempt(kind, i)
            if isinstance(result, str) or result[0] not in seen:
                break
            result = "duplicate"  # same text as a candidate or an earlier dark example
        if isinstance(result, str):
            dropped[result] += 1
            continue
        seen.add(result[0])
        # the pid keeps the planned slot within the kind: a dropped example leaves a gap
        # rather than renumbering the others
        dark.append((kind, i, *result))
        made[kind] += 1

    out = dict(group)
    if dark:
        out["pids"] = [*group["pids"], *(dark_pid(kind, qid, i) for kind, i, _, _ in dark)]
        out["texts"] = [*group["texts"], *(text for _, _, text, _ in dark)]
        out["labels"] = [*group["labels"], *(0 for _ in dark)]
        out["kinds"] = [*kinds, *(kind for kind, _, _, _ in dark)]
        out["provenance"] = [*(group.get("provenance") or [""] * n), *(p for *_, p in dark)]
    return out, GroupOutcome(
        qid, made=tuple(sorted(made.items())), skipped=tuple(skipped),
        dropped=tuple(sorted(dropped.items())),
    )


def add_dark_examples(
    group: Mapping, spec: DarkSpec, tokenizer=None, max_length: int | None = None
) -> dict:
    """The group with ``spec.k`` dark examples appended (pure: the input is not changed).
    Groups that cannot get any are returned as they are (see :func:`make_dark_examples` for
    the reason)."""
    return make_dark_examples(group, spec, tokenizer, max_length)[0]


# ------------------------------------------------------------------ Ray Data stage


class DarkExampleMaker:
    """``map_batches`` callable: loads the tokenizer once per actor, maps pyarrow batches of
    candidate groups to groups with dark examples. Columns outside the group contract pass
    through unchanged."""

    def __init__(self, spec, tokenizer_path: str | None = None, max_length: int | None = None,
                 tally=None):
        self.spec = spec if isinstance(spec, DarkSpec) else DarkSpec.model_validate(spec)
        _check_spec(self.spec)
        self.budget = LengthBudget(tokenizer_path, max_length)
        self.tally = tally

    def __call__(self, batch):
        import pyarrow as pa

        if not isinstance(batch, pa.Table):
            batch = pa.Table.from_pydict(batch) if isinstance(batch, dict) else pa.table(batch)
        contract = [c for c in batch.column_names if c in GROUP_FIELDS]
        rows = batch.select(contract).to_pylist()
        outs, outcomes = [], []
        for row in rows:
            group, outcome = make_dark_examples(row, self.spec, budget=self.budget)
            outs.append(group)
            outcomes.append(outcome)
        table = pa.Table.from_pylist(outs, schema=CANDIDATE_GROUP_SCHEMA)
        for name in batch.column_names:
            if name not in GROUP_FIELDS:
                table = table.append_column(name, batch.column(name))
        if self.tally is not None and outcomes:
            import ray

            ray.get(self.tally.add.remote(outcomes))
        return table


def _tally_class():
    import ray

    @ray.remote(num_cpus=0)
    class _DarkTally:
        """Per-query outcomes from the stage's actors, each qid counted once."""

        def __init__(self) -> None:
            self._seen: set[str] = set()
            self._pending: list[GroupOutcome] = []

        def add(self, outcomes: list) -> None:
            for outcome in outcomes:
                if outcome.qid not in self._seen:
                    self._seen.add(outcome.qid)
                    self._pending.append(outcome)

        def take(self) -> list:
            out, self._pending = self._pending, []
            return out

    return _DarkTally


def dark_examples_stage(
    groups_ds, spec: DarkSpec, tokenizer_path: str | None = None,
    max_length: int | None = None, concurrency: int | None = None, *,
    report: DarkReport | None = None, groups_per_batch: int = 64, num_cpus: float = 1.0,
):
    """A lazy dataset of the groups with dark examples (CPU ``map_batches`` on an actor pool of
    ``concurrency`` actors, default 1, each loading the tokenizer once). Pass a
    :class:`DarkReport` to receive the counts; read it after consuming the dataset."""
    import ray

    from raykd.runtime import fit_actor_pool

    _check_spec(spec)
    LengthBudget(tokenizer_path, max_length)  # fail fast in the driver on a bad length/path
    tally = None
    if report is not None:
        tally = _tally_class().remote()
        report.attach(lambda: ray.get(tally.take.remote()))
    return groups_ds.map_batches(
        DarkExampleMaker,
        fn_constructor_kwargs={"spec": spec, "tokenizer_path": tokenizer_path,
                               "max_length": max_length, "tally": tally},
        batch_size=groups_per_batch,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(
            size=fit_actor_pool(concurrency or 1, num_cpus, "dark examples")),
        num_cpus=num_cpus,
    )


# ------------------------------------------------------------------ files


def iter_dark_groups(
    groups: Iterable[Mapping], spec: DarkSpec, tokenizer=None, max_length: int | None = None,
    report: DarkReport | None = None,
):
    """Stream groups with dark examples appended, counting into ``report``."""
    _check_spec(spec)
    budget = LengthBudget(tokenizer, max_length)
    for group in groups:
        out, outcome = make_dark_examples(group, spec, budget=budget)
        if report is not None:
            report.add(outcome)
        yield out


def write_dark_groups(
    input_path, output_path, spec: DarkSpec, tokenizer=None, max_length: int | None = None,
    on_error: str = "raise",
) -> DarkReport:
    """Read candidate groups (``.jsonl[.gz]`` or ``.parquet``), append dark examples, validate
    and write them as parquet (CANDIDATE_GROUP_SCHEMA), streaming. Returns the report."""
    from raykd.data.groups import iter_groups, write_groups_parquet

    report = DarkReport()
    groups = iter_groups(input_path, on_error=on_error)
    write_groups_parquet(output_path, iter_dark_groups(groups, spec, tokenizer, max_length,
                                                       report))
    return report
