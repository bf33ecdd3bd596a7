"""The candidates step: the stage's own candidate groups, or mined once and cached by their
settings.

Two registries, no if-chains: `SOURCES` maps `data.negatives_from` to what mines the negatives
(the first-stage retrievers here; methods register theirs), and `QUERY_SOURCES` maps
`data.queries` to the query sets a first-stage source mines for (joined when more than one).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from raykd.config import HoldoutSpec, Stage
from raykd.errors import ConfigError
from raykd.pipeline.context import RunContext, StageState
from raykd.pipeline.files import GROUPS_FILE, MINING_MARKER, group_files, iter_scored
from raykd.pipeline.kinds import student_kind
from raykd.pipeline.steps.registry import register_step
from raykd.storage import atomic_path, cached_artifact
from raykd.students import resolve_model

Source = Callable[[RunContext, StageState], str]  # -> a candidate-group folder
QueryMiner = Callable[[RunContext, Stage, "FirstStage", str], str]

SOURCES: dict[str, Source] = {}
QUERY_SOURCES: dict[str, tuple[QueryMiner, ...]] = {}


def register_source(name: str, source: Source) -> Source:
    """Make `data.negatives_from: name` mine with `source(context, state)`."""
    if name in SOURCES:
        raise ValueError(f"candidate source {name!r} is already registered")
    SOURCES[name] = source
    return source


def register_query_source(name: str, *miners: QueryMiner) -> None:
    """Make `data.queries: name` mine candidates with each of `miners` (joined)."""
    if name in QUERY_SOURCES:
        raise ValueError(f"query source {name!r} is already registered")
    QUERY_SOURCES[name] = miners


def candidates(ctx: RunContext, state: StageState) -> str:
    """A candidate-group path: the stage's own, or mined by its source (cached); without the
    held-out fold's queries when the stage has a `data.holdout`."""
    data = state.stage.data
    if data.candidates:
        if not Path(data.candidates).exists():
            raise ConfigError("data.candidates", f"{data.candidates} does not exist")
        path = str(Path(data.candidates).resolve())
    else:
        path = SOURCES[data.negatives_from](ctx, state)
    return held_out_candidates(ctx, path, data.holdout) if data.holdout else path


def held_out_candidates(ctx: RunContext, path: str, holdout: HoldoutSpec) -> str:
    """The groups of `path` whose query is outside the held-out fold (cached by the files'
    contents)."""
    from raykd.data.folds import FOLD_RULE, outside_fold
    from raykd.data.groups import write_groups_parquet
    from raykd.fingerprint import file_sha256

    def keep(out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        kept = write_groups_parquet(out / GROUPS_FILE,
                                    outside_fold(iter_scored(path), holdout.folds, holdout.fold))
        ctx.echo(f"[raykd] holdout: {kept} groups outside fold {holdout.fold} of "
                 f"{holdout.folds} ({FOLD_RULE}) -> {out}")
        if kept == 0:
            raise ConfigError("data.holdout", f"no group of {path} is outside fold "
                                              f"{holdout.fold}")
        with atomic_path(out / MINING_MARKER) as tmp:
            tmp.write_text(yaml.safe_dump({"from": path, "holdout": holdout.model_dump(),
                                           "rule": FOLD_RULE, "groups": kept}, sort_keys=False))

    contents = [file_sha256(f) for f in group_files(path)]  # a user's file may be rewritten
    out, _ = cached_artifact(ctx.candidates_root, "holdout",
                             {"from": path, "contents": contents,
                              "holdout": holdout.model_dump(mode="json")}, keep,
                             marker=MINING_MARKER)
    return str(out)


@register_step("candidates", order=10)
def _candidates(ctx: RunContext, state: StageState) -> StageState:
    return replace(state, candidates=candidates(ctx, state))


# ------------------------------------------------------------------ first-stage sources


@dataclass(frozen=True)
class FirstStage:
    """A source that ranks the corpus with a first-stage retriever, for every query set of
    `data.queries`. `from_student`: the stage's input student ranks (a bi-encoder), else
    `data.negatives_model` or the recipe's student; `uses_model`: False for a lexical ranker
    (the model still keys its cache, as it always has)."""

    from_student: bool = False
    uses_model: bool = True

    def __call__(self, ctx: RunContext, state: StageState) -> str:
        data = state.stage.data
        if self.from_student and not student_kind(ctx.recipe).bi_encoder:
            raise ConfigError("data.negatives_from", "'student' mines with a bi-encoder "
                                                     "student; use 'teacher' (a collective "
                                                     "teacher) or a bi-encoder source")
        model = (state.student_in if self.from_student
                 else resolve_model(data.negatives_model or ctx.recipe.student.model))
        parts = [mine(ctx, state.stage, self, model) for mine in QUERY_SOURCES[data.queries]]
        return parts[0] if len(parts) == 1 else joined_candidates(ctx, parts)


def labelled_candidates(ctx: RunContext, stage: Stage, source: FirstStage, model: str) -> str:
    """The split's labelled queries, their positives and mined negatives (cached)."""
    from raykd.negatives.candidates import mine_from_spec

    data = stage.data

    def mine(out: Path) -> None:
        ctx.echo(f"[raykd] mining {data.negatives_from} negatives for {data.split} -> {out}")
        mine_from_spec(data, out, model=model if source.uses_model else None,
                       student_options=ctx.retrieval_options(stage), fmt="parquet",
                       cache_dir=ctx.embedding_cache, **ctx.mining_resources(stage))

    out, _ = cached_artifact(ctx.candidates_root, f"{data.split}-{data.negatives_from}",
                             {"data": data.labelled_key(), "model": model},
                             mine, marker=MINING_MARKER)
    return str(out)


def pseudo_candidates(ctx: RunContext, stage: Stage, source: FirstStage, model: str) -> str:
    """Pseudo-queries from the corpus with first-stage candidates and no labels (cached by
    the pseudo-query rule and the mining settings)."""
    from raykd.negatives.candidates import mine_pseudo_queries

    data, pseudo = stage.data, stage.data.pseudo
    settings = {k: getattr(data, k) for k in ("negatives_from", "depth", "num_negatives",
                                              "sampling", "window", "seed")}
    settings |= data.mining_index_key()  # absent at the defaults: older keys hold

    def mine(out: Path) -> None:
        ctx.echo(f"[raykd] pseudo-queries from {pseudo.count} corpus passages "
                 f"({pseudo.rule}), {data.negatives_from} candidates -> {out}")
        mine_pseudo_queries(
            data.dataset_dir(), out, count=pseudo.count, rule=pseudo.rule,
            pseudo_seed=pseudo.seed, min_words=pseudo.min_words,
            max_words=pseudo.max_words, source=data.negatives_from,
            model=model if source.uses_model else None,
            depth=data.depth, num_negatives=data.num_negatives, sampling=data.sampling,
            window=tuple(data.window), seed=data.seed, index_kind=data.mining_index,
            nprobe=data.mining_nprobe, fmt="parquet",
            student_options=ctx.retrieval_options(stage),
            cache_dir=ctx.embedding_cache, source_as_positive=pseudo.source_as_positive,
            echo=ctx.echo, **ctx.mining_resources(stage))

    out, _ = cached_artifact(ctx.candidates_root, "corpus-pseudo",
                             {"dataset": str(data.dataset_dir()),
                              "pseudo": pseudo.model_dump(mode="json"),
                              "mining": json.loads(json.dumps(settings)),
                              "model": model}, mine, marker=MINING_MARKER)
    return str(out)


def joined_candidates(ctx: RunContext, parts: list[str]) -> str:
    """One candidate folder holding the groups of several (hard links, else copies)."""
    def join(out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(parts):
            for file in sorted(Path(part).glob("*.parquet")):
                target = out / f"{i}-{file.name}"
                if not target.exists():
                    try:
                        target.hardlink_to(file)
                    except OSError:
                        shutil.copy2(file, target)
        with atomic_path(out / MINING_MARKER) as tmp:
            tmp.write_text(yaml.safe_dump({"joined": parts}, sort_keys=False))

    out, _ = cached_artifact(ctx.candidates_root, "joined", {"parts": parts}, join,
                             marker=MINING_MARKER)
    return str(out)


register_source("bm25", FirstStage(uses_model=False))
register_source("dense", FirstStage())
register_source("union", FirstStage())
register_source("student", FirstStage(from_student=True))
register_query_source("labelled", labelled_candidates)
register_query_source("corpus", pseudo_candidates)
register_query_source("both", labelled_candidates, pseudo_candidates)
