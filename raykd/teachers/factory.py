"""Build a Teacher from a `TeacherSpec` through a registry (kind -> builder), no if-chains.

Model-backed kinds resolve `model: minilm` to the bundled all-MiniLM-L6-v2 and otherwise take an
HF id or a local folder (offline). Options a spec leaves at their defaults and that a saved
folder may carry (`scale`, `pooling`, `similarity`, `projection_dim`, `query_augmentation`) are
passed only when the recipe set them, so a saved teacher keeps its own.
"""

from __future__ import annotations

from collections.abc import Callable

from raykd.config import TeacherSpec
from raykd.errors import ConfigError
from raykd.teachers.base import Teacher

Builder = Callable[[TeacherSpec, "str | None"], Teacher]
TEACHER_BUILDERS: dict[str, Builder] = {}


def register_teacher(kind: str) -> Callable[[Builder], Builder]:
    """Decorator: make `build_teacher` build `kind` with the decorated function."""
    def wrap(builder: Builder) -> Builder:
        if kind in TEACHER_BUILDERS:
            raise ValueError(f"teacher kind {kind!r} is already registered")
        TEACHER_BUILDERS[kind] = builder
        return builder
    return wrap


def _if_set(spec: TeacherSpec, *names: str) -> dict:
    """The given fields that the recipe set explicitly (others keep the model's saved values)."""
    return {name: getattr(spec, name) for name in names if name in spec.model_fields_set}


@register_teacher("cross_encoder")
def _cross_encoder(spec: TeacherSpec, corpus_path: str | None) -> Teacher:
    from raykd.teachers.cross_encoder import CrossEncoderTeacher

    return CrossEncoderTeacher(spec.model, query_max_length=spec.query_max_length,
                               passage_max_length=spec.passage_max_length,
                               batch_size=spec.batch_size, label_index=spec.label_index,
                               trust_remote_code=spec.trust_remote_code)


@register_teacher("bi_encoder")
def _bi_encoder(spec: TeacherSpec, corpus_path: str | None) -> Teacher:
    from raykd.teachers.bi_encoder import BiEncoderTeacher

    return BiEncoderTeacher(spec.model, query_max_length=spec.query_max_length,
                            passage_max_length=spec.passage_max_length,
                            batch_size=spec.batch_size, trust_remote_code=spec.trust_remote_code,
                            **_if_set(spec, "pooling", "similarity", "scale"))


@register_teacher("late_interaction")
def _late_interaction(spec: TeacherSpec, corpus_path: str | None) -> Teacher:
    from raykd.teachers.late_interaction import LateInteractionTeacher

    options = _if_set(spec, "projection_dim", "similarity", "query_augmentation",
                      "mask_punctuation")  # the spec allows cosine or l2 only
    return LateInteractionTeacher(spec.model, query_max_length=spec.query_max_length,
                                  passage_max_length=spec.passage_max_length,
                                  batch_size=spec.batch_size,
                                  trust_remote_code=spec.trust_remote_code, **options)


@register_teacher("bm25")
def _bm25(spec: TeacherSpec, corpus_path: str | None) -> Teacher:
    from raykd.teachers.bm25 import BM25Teacher

    if corpus_path is None:
        raise ConfigError("teacher.kind", "a bm25 teacher needs corpus statistics: pass "
                                          "corpus_path (a BEIR folder or corpus file) to "
                                          "build_teacher")
    return BM25Teacher.from_corpus_path(corpus_path, k1=spec.k1, b=spec.b)


@register_teacher("ensemble")
def _ensemble(spec: TeacherSpec, corpus_path: str | None) -> Teacher:
    from raykd.teachers.ensemble import EnsembleTeacher

    members = [build_teacher(member, corpus_path) for member in spec.members]
    return EnsembleTeacher(members, weights=spec.weights, normalization=spec.normalization,
                           rrf_k=spec.rrf_k)


@register_teacher("cross_fit")
def _cross_fit(spec: TeacherSpec, corpus_path: str | None) -> Teacher:
    from raykd.teachers.cross_fit import CrossFitTeacher

    return CrossFitTeacher([build_teacher(teacher, corpus_path) for teacher in spec.folds])


@register_teacher("precomputed")
def _precomputed(spec: TeacherSpec, corpus_path: str | None) -> Teacher:
    from raykd.teachers.precomputed import PrecomputedTeacher

    return PrecomputedTeacher(spec.path, spec.format)


@register_teacher("collective")
def _collective(spec: TeacherSpec, corpus_path: str | None) -> Teacher:
    raise ConfigError("teacher.kind", "a collective teacher scores in-batch during training "
                                      "(its PRF expansions exist for the training queries "
                                      "only); use it with the `collective` loss, not to score "
                                      "candidate lists")


def build_teacher(spec: TeacherSpec, corpus_path: str | None = None) -> Teacher:
    """The teacher a spec describes; `corpus_path` feeds BM25 statistics (also in ensembles)."""
    try:
        builder = TEACHER_BUILDERS[spec.kind]
    except KeyError:
        raise ConfigError("teacher.kind", f"unknown teacher kind {spec.kind!r}; known: "
                                          f"{sorted(TEACHER_BUILDERS)}") from None
    return builder(spec, corpus_path)
