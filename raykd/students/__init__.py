"""Bi-encoder students."""

from raykd.students.bi_encoder import BiEncoder, BiEncoderOptions

__all__ = ["BiEncoder", "BiEncoderOptions"]
