"""Global in-batch score matrices: all-gather across workers, positives at each query's columns.

Layout: the passages of the global batch are laid out query-major, rank by rank: rank 0's query
0 candidates, rank 0's query 1 candidates, ..., then rank 1's. Local query ``b`` on a rank whose
passages start at global row ``offset`` has its own candidates at columns
``offset + b * n + j``; its positives are there, every other valid passage is a negative.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from raykd.errors import LossInputError


def _distributed(group: object | None) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _gather(tensor: Tensor, group: object | None, keep_grad: bool) -> tuple[Tensor, int]:
    """All-gather along dim 0 (sizes may differ per rank); return (gathered, local offset)."""
    if not _distributed(group):
        return tensor, 0
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    size = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    sizes_t = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes_t, size, group=group)
    sizes = [int(s.item()) for s in sizes_t]
    longest = max(sizes)
    send = tensor.detach()
    if send.shape[0] < longest:
        pad = send.new_zeros((longest - send.shape[0], *send.shape[1:]))
        send = torch.cat([send, pad], dim=0)
    parts = [torch.empty_like(send) for _ in range(world)]
    dist.all_gather(parts, send.contiguous(), group=group)
    trimmed = [p[:n] for p, n in zip(parts, sizes, strict=True)]
    if keep_grad:
        trimmed[rank] = tensor
    return torch.cat(trimmed, dim=0), sum(sizes[:rank])


def gather_with_grad(tensor: Tensor, group: object | None = None) -> Tensor:
    """All-gather ``tensor`` along dim 0 across ranks, keeping the local slice's gradient.

    The other ranks' slices are constants here; each rank back-propagates through its own
    slice (DDP then averages the gradients). Ranks may hold different numbers of rows.
    Returns ``tensor`` itself when torch.distributed is not initialised (or has one rank).
    """
    return _gather(tensor, group, keep_grad=True)[0]


def in_batch_layout(
    pos_mask: Tensor,
    valid_mask: Tensor | None = None,
    *,
    gather: bool = True,
    group: object | None = None,
) -> tuple[Tensor, Tensor]:
    """Global ``(pos_mask, valid_mask)`` of shape [B, N] for local per-query masks [B, n].

    N is the number of candidate passages in the global batch. Every valid passage of the
    global batch is a candidate for every local query; positives are the query's own.
    With ``gather=False`` (or no process group) the "global" batch is the local one.
    """
    if pos_mask.dim() != 2:
        raise LossInputError(
            f"in_batch: pos_mask must be [B, n], got shape {tuple(pos_mask.shape)}"
        )
    b, n = pos_mask.shape
    pos = pos_mask.bool()
    valid = torch.ones_like(pos) if valid_mask is None else valid_mask.bool()
    if valid.shape != pos.shape:
        raise LossInputError(
            f"in_batch: valid_mask shape {tuple(valid.shape)} does not match pos_mask shape "
            f"{tuple(pos.shape)}"
        )
    flat = valid.reshape(-1).to(torch.uint8)
    offset = 0
    if gather:
        flat, offset = _gather(flat, group, keep_grad=False)
    total = flat.shape[0]
    cols = (
        offset
        + torch.arange(b, device=pos.device)[:, None] * n
        + torch.arange(n, device=pos.device)
    )
    global_pos = torch.zeros((b, total), dtype=torch.bool, device=pos.device)
    global_pos.scatter_(1, cols, pos)
    global_valid = flat.bool().unsqueeze(0).expand(b, total).clone()
    return global_pos, global_valid


def in_batch_scores(
    queries: Tensor,
    passages: Tensor,
    pos_mask: Tensor,
    valid_mask: Tensor | None = None,
    *,
    gather: bool = True,
    group: object | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Dot-product scores of each local query against every passage of the global batch.

    ``queries[B, d]``, ``passages[B, n, d]`` (each query's own candidates), masks ``[B, n]``.
    Returns ``(scores[B, N], pos_mask[B, N], valid_mask[B, N])`` ready for any loss; passages
    from other ranks are gathered with :func:`gather_with_grad` when ``gather``.
    """
    if queries.dim() != 2 or passages.dim() != 3:
        raise LossInputError(
            f"in_batch: queries must be [B, d] and passages [B, n, d], got "
            f"{tuple(queries.shape)} and {tuple(passages.shape)}"
        )
    b, n, d = passages.shape
    if queries.shape != (b, d) or pos_mask.shape != (b, n):
        raise LossInputError(
            f"in_batch: shapes disagree: queries {tuple(queries.shape)}, passages "
            f"{tuple(passages.shape)}, pos_mask {tuple(pos_mask.shape)}"
        )
    flat = passages.reshape(b * n, d)
    if gather:
        flat = gather_with_grad(flat, group)
    pos, valid = in_batch_layout(pos_mask, valid_mask, gather=gather, group=group)
    return queries @ flat.T, pos, valid
