"""Turn a batch of candidate groups into padded tensors for the student and the loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from raykd.losses.in_batch import gather_with_grad

if TYPE_CHECKING:
    from raykd.students import BiEncoder

ORIGINAL_KINDS = ("pos", "neg", "source")  # not generated (dark examples are)


@dataclass
class CandidateBatch:
    """A batch of B queries with up to m candidates each (padded to a fixed m).

    `passage_index[b, j]` is the row of candidate (b, j) in the flat `passages` list, or -1 for
    padding. `original_mask` marks candidates that are not dark examples.
    """

    qids: list[str]
    queries: list[str]
    passages: list[str]
    passage_index: torch.Tensor  # [B, m] long
    pos_mask: torch.Tensor  # [B, m] bool
    valid_mask: torch.Tensor  # [B, m] bool
    original_mask: torch.Tensor  # [B, m] bool
    teacher: torch.Tensor | None  # [B, m] float32

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.valid_mask.shape)


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value)


def collate_groups(batch: dict, list_size: int) -> CandidateBatch:
    """Pad the groups of a Ray Data numpy batch to `list_size` candidates each.

    Groups longer than `list_size` are an error: the driver sizes `list_size` from the data.
    """
    qids = [str(q) for q in batch["qid"]]
    size = len(qids)
    index = torch.full((size, list_size), -1, dtype=torch.long)
    pos = torch.zeros((size, list_size), dtype=torch.bool)
    original = torch.zeros((size, list_size), dtype=torch.bool)
    has_teacher = "teacher_scores" in batch and batch["teacher_scores"] is not None
    teacher = torch.zeros((size, list_size), dtype=torch.float32) if has_teacher else None
    passages: list[str] = []
    for b in range(size):
        texts = _as_list(batch["texts"][b])
        labels = _as_list(batch["labels"][b])
        kinds = _as_list(batch["kinds"][b]) if "kinds" in batch else []
        if len(texts) > list_size:
            raise ValueError(f"query {qids[b]} has {len(texts)} candidates; list_size is {list_size}")
        for j, text in enumerate(texts):
            index[b, j] = len(passages)
            passages.append(str(text))
            pos[b, j] = int(labels[j]) == 1
            original[b, j] = (kinds[j] in ORIGINAL_KINDS) if kinds else True
        if has_teacher:
            scores = _as_list(batch["teacher_scores"][b])
            teacher[b, : len(scores)] = torch.tensor(scores, dtype=torch.float32)
    return CandidateBatch(qids, [str(q) for q in batch["query"]], passages, index, pos,
                          index >= 0, original, teacher)


def scatter_scores(flat: torch.Tensor, passage_index: torch.Tensor) -> torch.Tensor:
    """Place flat per-passage scores [N] into the [B, m] layout (padding gets 0)."""
    safe = passage_index.clamp(min=0)
    return torch.where(passage_index >= 0, flat[safe], torch.zeros((), dtype=flat.dtype))


def in_batch_positives(batch: CandidateBatch, rank: int, world_size: int) -> torch.Tensor:
    """Positive mask [B, world * B * m] for scoring each query against the global batch.

    Every worker holds B queries padded to the same m, so after an all-gather the global
    passage list is the concatenation of every worker's padded lists; a query's positives are
    its own labelled passages at its own columns.
    """
    size, m = batch.shape
    pos = torch.zeros((size, world_size * size * m), dtype=torch.bool)
    offset = rank * size * m
    for b in range(size):
        pos[b, offset + b * m: offset + (b + 1) * m] = batch.pos_mask[b]
    return pos


class Scorer:
    """Student (and frozen-reference) scores in the loss's layout: per-query lists or in-batch."""

    def __init__(self, student: BiEncoder, in_batch: bool, rank: int, world: int):
        self.student, self.in_batch, self.rank, self.world = student, in_batch, rank, world

    def passages_padded(self, p_emb: torch.Tensor, batch: CandidateBatch) -> torch.Tensor:
        size, m = batch.shape
        padded = p_emb.new_zeros((size * m, p_emb.shape[-1]))
        flat_index = batch.passage_index.flatten().to(p_emb.device)
        valid = flat_index >= 0
        return padded.index_copy(0, torch.nonzero(valid).flatten(), p_emb[flat_index[valid]])

    def scores(self, q_emb: torch.Tensor, p_emb: torch.Tensor, batch: CandidateBatch,
               gather_grad: bool = True) -> torch.Tensor:
        size, m = batch.shape
        padded = self.passages_padded(p_emb, batch)
        scale = self.student.options.scale
        if not self.in_batch:
            return scale * torch.einsum("bd,bmd->bm", q_emb, padded.view(size, m, -1))
        everything = gather_with_grad(padded) if gather_grad else gather_plain(padded)
        return scale * q_emb @ everything.T

    def masks(self, batch: CandidateBatch, device) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.in_batch:
            return batch.pos_mask.to(device), batch.valid_mask.to(device)
        pos = in_batch_positives(batch, self.rank, self.world)
        valid = gather_plain(batch.valid_mask.flatten().to(device))
        return pos.to(device), valid.unsqueeze(0).expand(batch.shape[0], -1)


def gather_plain(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 without gradient (identity outside torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    is_bool = tensor.dtype == torch.bool
    source = tensor.to(torch.uint8) if is_bool else tensor.detach()
    parts = [torch.empty_like(source) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, source.contiguous())
    out = torch.cat(parts, 0)
    return out.bool() if is_bool else out
