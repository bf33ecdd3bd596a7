"""Typed configuration: a Recipe is an ordered list of Stages (DESIGN.md section 1).

Recipes are YAML files validated into these objects; any field can be overridden with a dotted
`key=value` (`train.lr=2e-5`, `stages.0.loss.params.temperature=2`; bare `train.*`, `loss.*`,
`teacher.*`, `data.*` and `dark.*` apply to every stage). An unknown or invalid field fails with
a `ConfigError` that names it, before any work starts.

Teacher and student specs are one class per `kind`, each with only its own fields, joined in a
union discriminated by `kind` (`TeacherSpec`, `StudentSpec`): `k1` on a bi-encoder teacher is
an error naming the field. An override of `kind` (`teacher.kind=bm25`) drops the fields the new
kind lacks. Cache keys hash a spec through `spec_key`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from raykd.errors import ConfigError
from raykd.recipes import require_file


class Spec(BaseModel):
    """Base of every config object: unknown fields are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ------------------------------------------------------------------ students and teachers
#
# One class per kind (module docstring). A mapping without `kind` is the default kind (student:
# bi_encoder, teacher: ensemble). Code builds a spec with `student_spec(**fields)` or
# `teacher_spec(**fields)`, never a class directly.


def _default_kind(default: str) -> BeforeValidator:
    """Fill `kind` in a mapping that leaves it out, before the union picks a class by it."""
    def fill(value):
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": default, **value}
        return value
    return BeforeValidator(fill)


class _StudentBase(Spec):
    kind: str
    model: str = "minilm"
    num_layers: int | None = Field(None, ge=1)
    query_max_length: int = Field(64, ge=2)
    passage_max_length: int = Field(256, ge=2)
    trust_remote_code: bool = False

    def _options(self, keys: tuple[str, ...], flags: tuple[str, ...] = ()) -> dict:
        """`from_pretrained` overrides: the fields of `keys` that are not None, the `flags`
        the recipe set (unset ones keep the model's own), and `trust_remote_code` only when
        the recipe turns it on."""
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        out.update({k: getattr(self, k) for k in flags if k in self.model_fields_set})
        return {**out, **({"trust_remote_code": True} if self.trust_remote_code else {})}


class BiEncoderStudentSpec(_StudentBase):
    """A bi-encoder student (`raykd.students.BiEncoder`): one vector per text."""

    kind: Literal["bi_encoder"]
    pooling: Literal["mean", "cls"] | None = None
    similarity: Literal["dot", "cosine"] | None = None
    scale: float = Field(1.0, gt=0)
    shared: bool = True

    def options(self) -> dict:
        """Keyword overrides for `BiEncoder.from_pretrained`."""
        return self._options(("pooling", "similarity", "scale", "shared", "num_layers",
                              "query_max_length", "passage_max_length"))


class LateInteractionStudentSpec(_StudentBase):
    """A late-interaction student (`raykd.students.late_interaction.LateInteractionEncoder`):
    token vectors compared by MaxSim."""

    kind: Literal["late_interaction"]
    similarity: Literal["cosine", "l2"] | None = None
    projection_dim: int | None = Field(None, ge=1)
    query_augmentation: bool = False
    mask_punctuation: bool = False

    def options(self) -> dict:
        """Keyword overrides for `LateInteractionEncoder.from_pretrained`."""
        return self._options(("similarity", "projection_dim", "num_layers", "query_max_length",
                              "passage_max_length"),
                             flags=("query_augmentation", "mask_punctuation"))


StudentSpec = Annotated[
    Annotated[BiEncoderStudentSpec | LateInteractionStudentSpec, Field(discriminator="kind")],
    _default_kind("bi_encoder")]


class PRFSpec(Spec):
    """CollectiveKD's ColBERT-PRF query expansion (METHODS.md 4(b)); `collective` teachers."""

    docs: int = Field(3, ge=1)  # feedback passages (fb_docs)
    clusters: int = Field(24, ge=1)  # k-means centroids (fb_clusters)
    expansions: int = Field(10, ge=1)  # centroids kept (fb_k)
    beta: float = Field(1.0, gt=0)
    neighbours: int = Field(10, ge=1)  # nearest index tokens that name a centroid's token
    iterations: int = Field(20, ge=1)  # k-means iterations at most

    @field_validator("expansions")
    @classmethod
    def _at_most_clusters(cls, value, info: ValidationInfo):
        clusters = info.data.get("clusters")
        if clusters is not None and value > clusters:
            raise ValueError(f"{value} expansions cannot come from {clusters} clusters")
        return value


class _TeacherBase(Spec):
    """A teacher: its kind and the options that change its scores (all in the fingerprint)."""

    kind: str
    batch_size: int = Field(32, ge=1)  # pairs per scoring call

    def parts(self) -> Iterator[TeacherSpec]:
        """This spec and, for an ensemble, every member's parts (depth first)."""
        yield self


class _ModelTeacher(_TeacherBase):
    """A teacher that loads a model (`minilm`, an HF id or a local folder)."""

    model: str
    query_max_length: int = Field(64, ge=2)
    passage_max_length: int = Field(256, ge=2)
    trust_remote_code: bool = False


class CrossEncoderTeacherSpec(_ModelTeacher):
    kind: Literal["cross_encoder"]
    label_index: int = Field(0, ge=0)  # which logit column is the relevance score


class BiEncoderTeacherSpec(_ModelTeacher):
    kind: Literal["bi_encoder"]
    pooling: Literal["mean", "cls"] | None = None
    similarity: Literal["dot", "cosine"] | None = None
    scale: float = Field(1.0, gt=0)


class _TokenTeacher(_ModelTeacher):
    """Late interaction compares normalised token vectors: cosine or l2, never dot."""

    similarity: Literal["cosine", "l2"] | None = None
    projection_dim: int | None = Field(None, ge=1)
    query_augmentation: bool = False
    mask_punctuation: bool = False


class LateInteractionTeacherSpec(_TokenTeacher):
    kind: Literal["late_interaction"]


class CollectiveTeacherSpec(_TokenTeacher):
    """A late-interaction model whose queries are expanded by PRF (CollectiveKD)."""

    kind: Literal["collective"]
    prf: PRFSpec = Field(default_factory=PRFSpec)


class BM25TeacherSpec(_TeacherBase):
    kind: Literal["bm25"]
    k1: float = Field(1.5, gt=0)
    b: float = Field(0.75, ge=0, le=1)


class PrecomputedTeacherSpec(_TeacherBase):
    kind: Literal["precomputed"]
    path: str = Field(min_length=1)
    format: Literal["hofstatter_text", "hofstatter_ids", "jsonl", "parquet"] | None = None


class EnsembleTeacherSpec(_TeacherBase):
    """Members' scores, normalised per query and summed with `weights` (default equal)."""

    kind: Literal["ensemble"]
    members: list[TeacherSpec] = Field(min_length=1)
    weights: list[float] | None = None
    normalization: Literal["zscore", "minmax", "rrf", "none"] = "zscore"
    rrf_k: int = Field(60, ge=1)

    @model_validator(mode="after")
    def _a_weight_per_member(self) -> EnsembleTeacherSpec:
        if self.weights is not None and len(self.weights) != len(self.members):
            raise ValueError(f"`weights` has {len(self.weights)} values for "
                             f"{len(self.members)} members")
        return self

    def parts(self) -> Iterator[TeacherSpec]:
        yield self
        for member in self.members:
            yield from member.parts()


class CrossFitTeacherSpec(_TeacherBase):
    """One teacher per query fold (`raykd.data.folds`): a query in fold i is scored by
    `folds[i]`, the teacher trained without fold i (`data.holdout: {folds: n, fold: i}`)."""

    kind: Literal["cross_fit"]
    folds: list[TeacherSpec] = Field(min_length=2)

    def parts(self) -> Iterator[TeacherSpec]:
        yield self
        for teacher in self.folds:
            yield from teacher.parts()


TEACHER_SPECS: dict[str, type[_TeacherBase]] = {
    "cross_encoder": CrossEncoderTeacherSpec, "bi_encoder": BiEncoderTeacherSpec,
    "late_interaction": LateInteractionTeacherSpec, "bm25": BM25TeacherSpec,
    "ensemble": EnsembleTeacherSpec, "precomputed": PrecomputedTeacherSpec,
    "collective": CollectiveTeacherSpec, "cross_fit": CrossFitTeacherSpec}
STUDENT_SPECS: dict[str, type[_StudentBase]] = {
    "bi_encoder": BiEncoderStudentSpec, "late_interaction": LateInteractionStudentSpec}

TeacherSpec = Annotated[
    Annotated[CrossEncoderTeacherSpec | BiEncoderTeacherSpec | LateInteractionTeacherSpec
              | CollectiveTeacherSpec | BM25TeacherSpec | PrecomputedTeacherSpec
              | EnsembleTeacherSpec | CrossFitTeacherSpec, Field(discriminator="kind")],
    _default_kind("ensemble")]
EnsembleTeacherSpec.model_rebuild()
CrossFitTeacherSpec.model_rebuild()

_TEACHER_ADAPTER: TypeAdapter = TypeAdapter(TeacherSpec)
_STUDENT_ADAPTER: TypeAdapter = TypeAdapter(StudentSpec)


def teacher_spec(**fields) -> TeacherSpec:
    """The teacher spec of `fields` (`teacher_spec(kind="bm25", k1=0.9)`); `kind` picks the
    class (default ensemble). Raises pydantic's ValidationError on a bad field."""
    return _TEACHER_ADAPTER.validate_python(fields)


def student_spec(**fields) -> StudentSpec:
    """The student spec of `fields` (default kind bi_encoder)."""
    return _STUDENT_ADAPTER.validate_python(fields)


# Every field of the one flat TeacherSpec / StudentSpec that held all kinds' options before
# the split per kind, at its default. Cache keys (collective candidates and expansions, PROD's
# confusing-query scores, the sweep's warm-up) hash a spec in that flat form (`spec_key`), so
# what was cached before the split keeps its key. Frozen: a field added later is keyed by its
# presence in the spec's own dump, as a new field always was.
_FLAT_TEACHER = {
    "kind": "ensemble", "model": None, "query_max_length": 64, "passage_max_length": 256,
    "batch_size": 32, "label_index": 0, "pooling": None, "similarity": None, "scale": 1.0,
    "projection_dim": None, "query_augmentation": False, "mask_punctuation": False,
    "prf": {"docs": 3, "clusters": 24, "expansions": 10, "beta": 1.0, "neighbours": 10,
            "iterations": 20},
    "k1": 1.5, "b": 0.75, "members": [], "weights": None, "normalization": "zscore",
    "rrf_k": 60, "path": None, "format": None, "trust_remote_code": False}
_FLAT_STUDENT = {
    "model": "minilm", "kind": "bi_encoder", "pooling": None, "similarity": None, "scale": 1.0,
    "shared": True, "num_layers": None, "query_max_length": 64, "passage_max_length": 256,
    "projection_dim": None, "query_augmentation": False, "mask_punctuation": False,
    "trust_remote_code": False}


def spec_key(spec: TeacherSpec | StudentSpec, exclude: Iterable[str] = ()) -> dict:
    """What a cache key hashes of a teacher or student spec: its fields in the flat form of
    `_FLAT_TEACHER` / `_FLAT_STUDENT` (ensemble members likewise), less top-level `exclude`."""
    exclude = set(exclude)
    flat = _FLAT_TEACHER if isinstance(spec, _TeacherBase) else _FLAT_STUDENT
    own = spec.model_dump(mode="json", exclude=exclude)
    if isinstance(spec, EnsembleTeacherSpec) and "members" in own:
        own["members"] = [spec_key(member) for member in spec.members]
    if isinstance(spec, CrossFitTeacherSpec) and "folds" in own:
        own["folds"] = [spec_key(teacher) for teacher in spec.folds]
    return {**{k: v for k, v in flat.items() if k not in exclude}, **own}


def without_flat_defaults(raw: dict) -> dict:
    """A recipe mapping dumped before the specs were split per kind (every kind's fields, the
    other kinds' at their defaults) as the split specs read it: those defaults dropped. For a
    run's saved recipe.yaml, so that a run started before the split still resumes."""
    def spec(node, family: dict, flat: dict):
        if not isinstance(node, dict) or node.get("kind") not in family:
            return node
        own = family[node["kind"]].model_fields
        out = {k: v for k, v in node.items() if k in own or k not in flat or flat[k] != v}
        if isinstance(out.get("members"), list):
            out["members"] = [spec(m, TEACHER_SPECS, _FLAT_TEACHER) for m in out["members"]]
        return out

    raw = {**raw, "student": spec(raw.get("student"), STUDENT_SPECS, _FLAT_STUDENT)}
    if raw["student"] is None:
        del raw["student"]
    if isinstance(raw.get("stages"), list):
        raw["stages"] = [{**s, "teacher": spec(s["teacher"], TEACHER_SPECS, _FLAT_TEACHER)}
                         if isinstance(s, dict) and "teacher" in s else s
                         for s in raw["stages"]]
    return raw


class PseudoQuerySpec(Spec):
    """Queries nobody labelled, made from corpus passages with no model (inverse cloze, see
    `raykd.data.pseudo_queries`): a sentence (or the title) of a seeded sample of passages,
    removed from its passage. Used when the stage's `data.queries` is `corpus` or `both`."""

    count: int | None = Field(None, ge=1)  # passages to sample; each gives at most one query
    rule: Literal["sentence", "first_sentence", "title"] = "sentence"
    min_words: int = Field(5, ge=1)
    max_words: int = Field(40, ge=1)
    seed: int = 13
    # Label the source passage as the positive (inverse-cloze contrastive training, no
    # teacher needed): the control that tells the teacher's share from the extra queries'.
    source_as_positive: bool = False

    @model_validator(mode="after")
    def _word_bounds(self) -> PseudoQuerySpec:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words "
                             f"({self.max_words})")
        return self


class HoldoutSpec(Spec):
    """Leave one fold of the queries out (`raykd.data.folds`): the stage trains on the groups
    whose query is outside `fold` of `folds`. A member trained so is the teacher of that fold
    in a `cross_fit` teacher."""

    folds: int = Field(ge=2)
    fold: int = Field(ge=0)

    @model_validator(mode="after")
    def _fold_in_range(self) -> HoldoutSpec:
        if self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} does not exist among {self.folds} folds "
                             f"(0 to {self.folds - 1})")
        return self


MINING_INDEX_FIELDS = ("mining_index", "mining_nprobe")
# Where dense mining runs, not what it finds: never part of a candidate cache key.
MINING_RESOURCE_FIELDS = ("mining_concurrency", "mining_gpus_per_actor", "mining_search_cpus")


class DataSpec(Spec):
    """Which training candidates a stage sees."""

    dataset: str = "scifact"
    split: str = "train"
    candidates: str | None = None  # a candidate-group file/folder; None mines them
    # 'teacher': the stage's collective (late-interaction) teacher ranks the corpus
    negatives_from: Literal["bm25", "dense", "union", "student", "teacher"] = "union"
    negatives_model: str | None = None  # dense/union mining model; default: the recipe's student
    depth: int = Field(100, ge=1)
    num_negatives: int = Field(7, ge=0)
    sampling: Literal["random", "hardest", "window"] = "random"
    window: tuple[int, int] = (0, 100)
    in_batch: bool = False
    query_filter: Literal["all", "confusing"] = "all"
    max_queries: int | None = Field(None, ge=1)  # a seeded sample of the split's queries
    seed: int = 13
    # Which queries: the split's labelled ones, pseudo-queries from the corpus, or both
    # (their candidates from the same first stage, scored by the same teacher).
    queries: Literal["labelled", "corpus", "both"] = "labelled"
    pseudo: PseudoQuerySpec = Field(default_factory=PseudoQuerySpec)
    holdout: HoldoutSpec | None = None  # train without one fold of the queries (cross-fitting)
    # Dense mining's faiss index: 'auto' is exact flat search below 250k passages and IVF
    # (about 4 sqrt(N) lists) above; `mining_nprobe`: IVF lists visited per query (None: 64).
    mining_index: Literal["auto", "flat", "ivf"] = "auto"
    mining_nprobe: int | None = Field(None, ge=1)
    # Dense mining's resources: the corpus encoder pool (`mining_concurrency` actors of
    # `mining_gpus_per_actor` GPUs each; 0: CPU actors) and the faiss searcher actor's CPUs
    # (also its faiss threads; its query encoder gets `mining_gpus_per_actor` GPUs).
    mining_concurrency: int = Field(2, ge=1)
    mining_gpus_per_actor: float = Field(0.0, ge=0)
    mining_search_cpus: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _pseudo_count(self) -> DataSpec:
        if self.queries != "labelled" and self.pseudo.count is None:
            raise ValueError(f"queries={self.queries!r} needs `pseudo.count` (how many corpus "
                             f"passages to turn into pseudo-queries)")
        if self.queries != "labelled" and self.query_filter == "confusing":
            raise ValueError("query_filter='confusing' needs labelled queries (the teacher "
                             "must rank a labelled positive first); use queries=labelled")
        return self

    def labelled_key(self) -> dict:
        """The settings that shape the labelled candidates (the query source excluded; a
        holdout filters the mined groups afterwards, so the mining is shared; the mining index
        fields only when set, so that keys made before they existed hold; the mining resources
        never)."""
        return (self.model_dump(mode="json",
                                exclude={"queries", "pseudo", "holdout", *MINING_INDEX_FIELDS,
                                         *MINING_RESOURCE_FIELDS})
                | self.mining_index_key())

    def mining_index_key(self) -> dict:
        """The dense mining index fields that differ from their defaults."""
        return {name: getattr(self, name) for name in MINING_INDEX_FIELDS
                if getattr(self, name) != type(self).model_fields[name].default}

    @field_validator("window")
    @classmethod
    def _window_order(cls, value):
        if value[0] < 0 or value[1] <= value[0]:
            raise ValueError(f"window must be (start, end) with 0 <= start < end, got {value}")
        return value

    def dataset_dir(self) -> Path:
        from raykd.datasets import scifact_dir

        return scifact_dir() if self.dataset == "scifact" else Path(self.dataset)


class DarkSpec(Spec):
    """ADAM dark examples created per query before teacher scoring."""

    enabled: bool = False
    k: int = Field(2, ge=0)
    mix_fraction: float = Field(0.5, ge=0, le=1)  # share of the k that are mix-ups
    rho_mix: float = Field(0.3, gt=0, lt=1)
    rho_mask: float = Field(0.3, gt=0, lt=1)
    mix_strategy: Literal["span", "interleave"] = "span"
    mask_strategy: Literal["random", "query_overlap_first"] = "random"
    mask_token: str | None = "[MASK]"  # None deletes the masked words
    seed: int = 13


class LossSpec(Spec):
    """A loss from the registry, by name, with its parameters."""

    name: str = "kl"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_loss(self) -> LossSpec:
        from raykd.losses import build_loss

        try:
            build_loss(self.name, **self.params)
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(str(err)) from err
        return self


class TrainSpec(Spec):
    """Optimisation and distribution settings of one stage."""

    backend: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: int = Field(0, ge=0, le=3)
    deepspeed_config: str | None = None  # a JSON file merged over the generated config
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1)  # queries per worker per micro-step
    grad_accum: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    epochs: float = Field(1.0, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    checkpoint_every: int | None = Field(None, ge=1)
    max_failures: int = Field(0, ge=-1)
    log_every: int = Field(10, ge=1)
    seed: int = 13


class EvalSpec(Spec):
    """Evaluation after a stage."""

    split: str | None = "dev"
    k: int = Field(1000, ge=1)
    measures: list[str] = Field(default_factory=lambda: ["nDCG@10", "RR@10", "R@100", "R@1000"])
    rel: int = Field(1, ge=1)
    # Max lengths for evaluation (None: the student's own, as trained).
    query_max_length: int | None = Field(None, ge=2)
    passage_max_length: int | None = Field(None, ge=2)
    # Dense evaluation's faiss index: 'auto' is exact flat search below 250k passages, IVF
    # above; 250k passages or more are indexed and searched in a searcher actor, not the driver.
    index: Literal["auto", "flat", "ivf"] = "auto"

    def student_options(self) -> dict:
        return {k: getattr(self, k) for k in ("query_max_length", "passage_max_length")
                if getattr(self, k) is not None}


class Stage(Spec):
    """One stage of a recipe: teacher, data, optional dark examples, loss and optimisation."""

    name: str
    teacher: TeacherSpec | None = None
    data: DataSpec = Field(default_factory=DataSpec)
    dark: DarkSpec = Field(default_factory=DarkSpec)
    loss: LossSpec = Field(default_factory=LossSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    repeat: int = Field(1, ge=0)  # rounds of this stage; 0 leaves it out (an ablation)

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_by_reference(cls, value):
        """`teacher: bm25_minilm` (a bundled spec's name) or a spec file's path: its mapping."""
        if not isinstance(value, (str, Path)):
            return value
        try:
            return teacher_mapping(value)
        except ConfigError as err:
            raise ValueError(err.message) from None  # pydantic names the stage's field

    @model_validator(mode="after")
    def _unlabelled_queries_need_a_label_free_loss(self) -> Stage:
        if self.data.queries == "labelled" or self.data.pseudo.source_as_positive:
            return self
        from raykd.losses import build_loss

        if build_loss(self.loss.name, **self.loss.params)._requires_positive():
            raise ValueError(f"data.queries={self.data.queries!r} adds queries without a "
                             f"labelled positive, which loss '{self.loss.name}' needs; use "
                             f"`kl` (with `positive_margin` for the labelled ones), or label "
                             f"the source passages (`pseudo.source_as_positive`)")
        return self


class TrackingSpec(Spec):
    """MLflow: the tracking URI defaults to MLFLOW_TRACKING_URI, else a local store."""

    enabled: bool = True
    experiment: str = "raykd"
    tracking_uri: str | None = None


class Recipe(Spec):
    """A named, ordered list of stages over one student."""

    name: str
    method: str = "custom"
    student: StudentSpec = Field(default_factory=student_spec)
    stages: list[Stage]
    storage: str = "outputs"
    teacher_concurrency: int = Field(2, ge=1)  # actors scoring with the teacher / encoding
    teacher_num_gpus: float = Field(0.0, ge=0)
    score_cache: str | None = None  # default: <storage>/score_cache
    # Encode the whole corpus once per bi-encoder teacher into the shared embedding store and
    # score from it (pays off when candidates cover much of the corpus, as on BEIR sets, and
    # the zero-shot evaluation reads the same vectors); off for MS MARCO-sized corpora.
    teacher_corpus_store: bool = True
    # The corpus encodings' store (default: <storage's local folder>/embedding_cache, on the
    # driver's node, where the searcher actor then runs). A folder every node mounts (e.g. a
    # shared volume) lets dense search run on any node with the CPUs it asks for.
    embedding_cache: str | None = None
    test_split: str | None = "test"
    eval_initial: bool = False  # also evaluate the initial student ("before" metrics)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @field_validator("stages")
    @classmethod
    def _non_empty(cls, stages):
        if not stages:
            raise ValueError("a recipe needs at least one stage")
        if not any(s.repeat for s in stages):
            raise ValueError("every stage has repeat=0: nothing to run")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        return stages

    @field_validator("embedding_cache")
    @classmethod
    def _local_store(cls, value):
        if value is not None and "://" in value:
            raise ValueError(f"embedding_cache must be a mounted folder, not a URI: {value!r}")
        return value

    def run_dir(self) -> str:
        return os.path.join(self.storage, self.name)


STAGE_SHORTCUTS = ("teacher", "data", "dark", "loss", "train", "eval")


def _spec_family(loc: tuple, i: int, root: str | None) -> dict | None:
    """The spec classes by kind when `loc[i]` is a union's tag (the kind pydantic puts in the
    path after `teacher`, `student` or a `members` index), else None."""
    prev = loc[i - 1] if i else root
    if prev == "teacher" or (isinstance(prev, int) and i >= 2 and loc[i - 2] == "members"):
        family = TEACHER_SPECS
    elif prev == "student":
        family = STUDENT_SPECS
    else:
        return None
    return family if loc[i] in family else None


def _error_from_validation(err: ValidationError, source: str,
                           root: str | None = None) -> ConfigError:
    """One line for pydantic's first error: the field path (without the union tags; under
    `root` for a spec validated alone) and what is wrong with it."""
    first = err.errors()[0]
    loc, path, owner = first["loc"], [root] if root else [], None
    for i, part in enumerate(loc):
        family = _spec_family(loc, i, root)
        if family is not None:
            owner = (family, part, len(path))
        else:
            path.append(str(part))
    field = ".".join(path) or "<root>"
    detail = first["msg"]
    if first["type"] == "value_error":
        detail = detail.removeprefix("Value error, ")
    elif first["type"] == "extra_forbidden":
        detail = "unknown field"
        if owner is not None and owner[2] == len(path) - 1:  # a field of the tagged spec
            family, kind, _ = owner
            noun = "teacher" if family is TEACHER_SPECS else "student"
            kinds = [k for k, cls in family.items() if path[-1] in cls.model_fields]
            if kinds:
                article = "an" if kinds[0][0] in "aeiou" else "a"
                detail = (f"only {article} {' or '.join(kinds)} {noun} has `{path[-1]}` (this "
                          f"{noun} is {kind})")
    elif first["type"] == "literal_error":
        detail = f"{detail} (got {first.get('input')!r})"
    elif first["type"] == "union_tag_invalid":
        field = f"{field}.kind" if field != "<root>" else "kind"
        detail = f"Input should be one of {first['ctx']['expected_tags']} " \
                 f"(got {first['ctx']['tag']!r})"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return ConfigError(field, f"{detail}{more} [{source}]")


def parse_value(text: str) -> Any:
    """A command-line value: YAML scalars and lists (`2e-5`, `true`, `[1, 2]`, `null`)."""
    return yaml.safe_load(text) if text != "" else ""


# Every seeded choice of a stage: the sampled queries and pseudo-queries, the negatives, the
# dark examples, the data order and dropout.
SEEDED_FIELDS = ("data.seed", "data.pseudo.seed", "dark.seed", "train.seed")


def seed_overrides(seed: int) -> list[str]:
    """Overrides that run a recipe at `seed`: every seeded field of every stage set to it."""
    return [f"{field}={seed}" for field in SEEDED_FIELDS]


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides to a raw recipe dict; stage shortcuts fan out to all stages."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "an override must look like field.path=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        value = parse_value(text)
        if parts[0] in STAGE_SHORTCUTS:
            for stage in raw.get("stages", []):
                _set_path(stage, parts, value, key)
        else:
            _set_path(raw, parts, value, key)
    return raw


def _set_path(node: Any, parts: list[str], value: Any, key: str) -> None:
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(key, f"'{part}' is not an index of a {len(node)}-item list")
            node = node[int(part)]
        else:
            if part == "teacher" and isinstance(node.get(part), str):  # a referenced spec
                node[part] = teacher_mapping(node[part], key)
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(key, f"'{'.'.join(parts[:i + 1])}' is not a mapping")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(key, f"'{last}' is not an index of a {len(node)}-item list")
        node[int(last)] = value
    else:
        if last == "kind":
            _switch_kind(node, parts, value)
        node[last] = value


def _switch_kind(node: dict, parts: list[str], kind: Any) -> None:
    """`teacher.kind=bm25` on a spec of another kind: the fields the new kind lacks go (a
    spec holds only its own kind's fields), the shared ones (model, lengths) stay."""
    owner = parts[-2] if len(parts) >= 2 else None
    if owner == "student":
        family, default = STUDENT_SPECS, "bi_encoder"
    elif owner == "teacher" or (len(parts) >= 3 and parts[-3] == "members"):
        family, default = TEACHER_SPECS, "ensemble"
    else:
        return
    if kind in family and node.get("kind", default) != kind:
        for name in [k for k in node if k not in family[kind].model_fields]:
            del node[name]


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply dotted overrides, validate; errors name the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError("<file>", f"{path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError("<root>", f"{path} must hold a mapping, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    return recipe_from_dict(raw, source=str(path))


def recipe_from_dict(raw: dict, source: str = "<dict>") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise _error_from_validation(err, source) from None


def dump_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the resolved recipe as YAML (loadable again by `load_recipe`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))


def teacher_mapping(value: str | Path, field: str = "teacher") -> dict:
    """The raw TeacherSpec mapping of a teacher file: a path, or a bundled spec's bare name
    (`bm25_minilm`, raykd/recipes/teachers/); a bare spec or one under a `teacher:` key."""
    path = require_file(value, "teacher", field)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML
    except yaml.YAMLError as err:
        raise ConfigError(field, f"{path} is not valid YAML/JSON: {err}") from None
    if isinstance(raw, dict) and "teacher" in raw and "kind" not in raw:
        raw = raw["teacher"]
    if not isinstance(raw, dict):
        raise ConfigError(field, f"{path} must hold a mapping (a TeacherSpec)")
    return raw


def validate_teacher(raw: dict, source: str) -> TeacherSpec:
    """A TeacherSpec from a raw mapping; a bad field is a ConfigError naming `teacher.<field>`
    and `source`."""
    try:
        return _TEACHER_ADAPTER.validate_python(raw)
    except ValidationError as err:
        raise _error_from_validation(err, source, root="teacher") from None


def load_teacher_spec(path: str | Path, **overrides) -> TeacherSpec:
    """A TeacherSpec from a YAML or JSON file (`teacher_mapping`), with top-level `overrides`
    (e.g. `batch_size`) applied before validation."""
    return validate_teacher({**teacher_mapping(path), **overrides}, str(path))
