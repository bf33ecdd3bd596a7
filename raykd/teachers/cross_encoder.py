"""Cross-encoder teacher: any Hugging Face sequence-classification model scores (query, passage).

The pair is tokenised as `[CLS] query [SEP] passage [SEP]` (whatever the tokenizer's pair
template is) up to `query_max_length + passage_max_length` tokens, cutting the passage only.
The score is the logit of a single-label head, or column `label_index` (default 0) of a wider
one. Pairs are sorted by length and batched; inference runs under `torch.no_grad`, in bf16
(fp16 where bf16 is unsupported) autocast on CUDA and in fp32 on CPU.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from raykd.errors import ConfigError
from raykd.teachers.base import Teacher, model_reference

SANE_MAX_LENGTH = 1_000_000  # tokenizers without a limit report a huge model_max_length


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def inference_precision(device: torch.device) -> str:
    """`bf16` / `fp16` under CUDA (bf16 when supported), `fp32` elsewhere."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast_for(device: torch.device):
    """The autocast context matching `inference_precision` (a no-op on CPU)."""
    precision = inference_precision(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def length_order(queries: list[str], passages: list[str]) -> np.ndarray:
    """Pair indices longest first (stable), so each batch pads to similar lengths."""
    return np.argsort([-(len(q) + len(p)) for q, p in zip(queries, passages, strict=True)],
                      kind="stable")


class CrossEncoderTeacher(Teacher):
    """Scores pairs with an `AutoModelForSequenceClassification` head."""

    kind = "cross_encoder"

    def __init__(self, model: str, *, query_max_length: int = 64, passage_max_length: int = 256,
                 batch_size: int = 32, trust_remote_code: bool = False, label_index: int = 0,
                 device: str | torch.device | None = None):
        super().__init__()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from raykd.students.bundled import resolve_model

        self.model_name = model
        path = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=trust_remote_code)
        num_labels = int(self.model.config.num_labels)
        if not 0 <= label_index < num_labels:
            raise ConfigError("teacher.label_index",
                              f"{label_index} is outside the model's {num_labels} labels")
        self.query_max_length = int(query_max_length)
        self.passage_max_length = int(passage_max_length)
        self.max_length = self.query_max_length + self.passage_max_length
        limit = getattr(self.tokenizer, "model_max_length", None)
        if limit is not None and limit < SANE_MAX_LENGTH and self.max_length > limit:
            raise ConfigError("teacher.passage_max_length",
                              f"query_max_length + passage_max_length = {self.max_length} "
                              f"exceeds the model's limit of {limit} tokens")
        self.batch_size = int(batch_size)
        self.label_index = int(label_index)
        self.num_labels = num_labels
        self.trust_remote_code = trust_remote_code
        self.device = pick_device(device)
        self.model.to(self.device).eval()
        self._reference = model_reference(model, path)
        self._specials = self.tokenizer.num_special_tokens_to_add(pair=True)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            **self._reference,
            "query_max_length": self.query_max_length,
            "passage_max_length": self.passage_max_length,
            "truncation": "passage_only",
            "num_labels": self.num_labels,
            "label_index": self.label_index,
        }

    def _tokenize(self, queries: list[str], passages: list[str]) -> dict:
        query_lengths = [len(ids) for ids in
                         self.tokenizer(queries, add_special_tokens=False)["input_ids"]]
        # Passage-only truncation needs room for at least one passage token; a query longer
        # than that (rare) is cut too rather than failing the whole batch.
        fits = max(query_lengths) + self._specials < self.max_length
        return self.tokenizer(queries, passages, padding=True, max_length=self.max_length,
                              truncation="only_second" if fits else "longest_first",
                              return_tensors="pt")

    @torch.no_grad()
    def _score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        order = length_order(queries, passages)
        out = np.empty(len(queries), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = self._tokenize([queries[i] for i in idx], [passages[i] for i in idx])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with autocast_for(self.device):
                logits = self.model(**batch).logits
            self.forward_calls += 1
            out[idx] = logits[:, self.label_index].float().cpu().numpy()
        return out
