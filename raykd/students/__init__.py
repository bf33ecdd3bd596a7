"""Bi-encoder students."""

from raykd.students.bi_encoder import BiEncoder, BiEncoderOptions, set_serving_lengths
from raykd.students.bundled import minilm_path, resolve_model

__all__ = ["BiEncoder", "BiEncoderOptions", "minilm_path", "resolve_model",
           "set_serving_lengths"]
