"""In-batch gathering across a real 2-process gloo group."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raykd.losses import gather_with_grad, in_batch_layout, in_batch_scores, infonce_loss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(0)
        # rank 0 holds 2 rows, rank 1 holds 1 row: unequal sizes must gather too.
        local = (torch.arange(2 - rank, dtype=torch.float32)[:, None] + 10 * rank).repeat(1, 3)
        local.requires_grad_(True)
        gathered = gather_with_grad(local)
        (gathered * (1 + torch.arange(gathered.shape[0]))[:, None]).sum().backward()

        b, n, d = 2, 2, 3
        g = torch.Generator().manual_seed(rank)
        q = torch.randn(b, d, generator=g, requires_grad=True)
        p = torch.randn(b, n, d, generator=g, requires_grad=True)
        pos = torch.tensor([[True, False], [True, False]])
        valid = torch.tensor([[True, True], [True, rank == 0]])
        scores, gpos, gvalid = in_batch_scores(q, p, pos, valid)
        loss = infonce_loss(scores, gpos, gvalid)
        loss.backward()
        torch.save(
            {
                "gathered": gathered.detach(),
                "grad": local.grad,
                "scores": scores.detach(),
                "gpos": gpos,
                "gvalid": gvalid,
                "p_grad": p.grad,
                "q": q.detach(),
                "p": p.detach(),
                "layout": in_batch_layout(pos, valid),
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_gather_with_grad_two_gloo_ranks(tmp_path):
    """Guards the global in-batch pool: all ranks see every row in rank order (even with
    unequal batch sizes), only the local slice carries gradient, and the positive columns
    point at each query's own passages on every rank."""
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    expected = torch.tensor([[0.0] * 3, [1.0] * 3, [10.0] * 3])
    assert torch.equal(r0["gathered"], expected)
    assert torch.equal(r1["gathered"], expected)
    # d/d local of sum(gathered * row_index+1): rank 0 owns rows 0-1, rank 1 owns row 2.
    assert torch.equal(r0["grad"], torch.tensor([[1.0] * 3, [2.0] * 3]))
    assert torch.equal(r1["grad"], torch.tensor([[3.0] * 3]))

    all_p = torch.cat([r0["p"].reshape(-1, 3), r1["p"].reshape(-1, 3)])
    for r, offset in ((r0, 0), (r1, 4)):
        assert r["scores"].shape == (2, 8)
        assert torch.allclose(r["scores"], r["q"] @ all_p.T)
        assert r["gpos"].nonzero().tolist() == [[0, offset], [1, offset + 2]]
        assert r["gvalid"][0].tolist() == [True] * 7 + [False]
        assert torch.equal(r["layout"][0], r["gpos"])
        assert torch.isfinite(r["p_grad"]).all() and r["p_grad"].abs().sum() > 0


def test_gather_is_identity_without_process_group():
    """Guards single-process training: no process group means the local tensor, unchanged."""
    assert not dist.is_initialized()
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
