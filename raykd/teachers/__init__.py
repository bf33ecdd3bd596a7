"""Teachers: the `Teacher` interface, its kinds, the factory and calibration diagnostics.

Names are imported on first use, so `import raykd.teachers` (or one of its light submodules)
does not load torch or transformers.
"""

from __future__ import annotations

import importlib

from raykd.teachers.base import Teacher, model_reference, stable_hash, weights_sha256

_LAZY = {
    "CrossEncoderTeacher": "raykd.teachers.cross_encoder",
    "BiEncoderTeacher": "raykd.teachers.bi_encoder",
    "LateInteractionTeacher": "raykd.teachers.late_interaction",
    "BM25Teacher": "raykd.teachers.bm25",
    "EnsembleTeacher": "raykd.teachers.ensemble",
    "PrecomputedTeacher": "raykd.teachers.precomputed",
    "MissingScoreError": "raykd.teachers.precomputed",
    "build_teacher": "raykd.teachers.factory",
    "register_teacher": "raykd.teachers.factory",
    "TEACHER_BUILDERS": "raykd.teachers.factory",
    "teacher_diagnostics": "raykd.teachers.diagnostics",
    "format_diagnostics": "raykd.teachers.diagnostics",
    "log_diagnostics": "raykd.teachers.diagnostics",
}

__all__ = ["Teacher", "model_reference", "stable_hash", "weights_sha256", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'raykd.teachers' has no attribute {name!r}")
