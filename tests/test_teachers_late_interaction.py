"""The ColBERT-style late-interaction encoder: MaxSim maths, masking, augmentation, save/load."""

from __future__ import annotations

import math

import pytest
import torch

from raykd.errors import ConfigError
from raykd.students.late_interaction import (
    OPTIONS_FILE,
    PROJECTION_FILE,
    LateInteractionEncoder,
    maxsim,
    maxsim_matrix,
)

# Two query tokens (the second is padding) and three passage tokens (the third is padding).
Q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
QM = torch.tensor([[True, False]])
P = torch.tensor([[[0.6, 0.8], [0.8, 0.6], [1.0, 0.0]]])
PM = torch.tensor([[True, True, False]])


def test_maxsim_cosine_matches_hand_computation():
    """Guards MaxSim's masks: a padded passage token (here a perfect match) must never win, and
    a padded query token must add nothing."""
    # q1 . p = [0.6, 0.8, (1.0 masked)] -> 0.8; q2 is masked.
    assert maxsim(Q, QM, P, PM).tolist() == pytest.approx([0.8])
    # Without masks both query tokens count and the padded passage token wins for q1: 1.0 + 0.8.
    all_q, all_p = torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool)
    assert maxsim(Q, all_q, P, all_p).tolist() == pytest.approx([1.8])


def test_maxsim_l2_is_negative_squared_distance():
    """Guards the L2 variant (CollectiveKD, METHODS 4c): sum_i max_j -||q_i - d_j||^2."""
    # q1 to p1: (0.4^2 + 0.8^2) = 0.8; to p2: (0.2^2 + 0.6^2) = 0.4 -> max is -0.4.
    assert maxsim(Q, QM, P, PM, "l2").tolist() == pytest.approx([-0.4])
    all_q = torch.ones(1, 2, dtype=torch.bool)
    # q2 to p1: 0.36 + 0.04 = 0.4; to p2: 0.64 + 0.16 = 0.8 -> -0.4. Total -0.8.
    assert maxsim(Q, all_q, P, PM, "l2").tolist() == pytest.approx([-0.8])


def test_maxsim_matrix_diagonal_equals_aligned_maxsim():
    """Guards the all-pairs form used by in-batch losses against the aligned form."""
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 4, 5), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(3, 6, 5), dim=-1)
    qm = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    pm = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    for sim in ("cosine", "l2"):
        matrix = maxsim_matrix(q, qm, p, pm, sim)
        assert matrix.shape == (3, 3)
        torch.testing.assert_close(torch.diagonal(matrix), maxsim(q, qm, p, pm, sim))
        torch.testing.assert_close(matrix[0, 2], maxsim(q[:1], qm[:1], p[2:], pm[2:], sim)[0])


def test_query_augmentation_pads_with_attended_mask_tokens(tiny_encoder_dir):
    """Guards [MASK] augmentation: queries fill query_max_length with [MASK] ids that are
    attended to and count in MaxSim (not ordinary padding)."""
    enc = LateInteractionEncoder.from_pretrained(tiny_encoder_dir, query_max_length=10,
                                                 query_augmentation=True)
    batch = enc.tokenize_queries(["cells divide", "what lowers fracture risk in adults"])
    assert batch["input_ids"].shape == (2, 10)
    assert bool(batch["attention_mask"].all())
    mask_id = enc.tokenizer.mask_token_id
    plain = enc.tokenizer("cells divide")["input_ids"]
    assert batch["input_ids"][0, :len(plain)].tolist() == plain
    assert (batch["input_ids"][0, len(plain):] == mask_id).all()
    _, qmask = enc.embed_queries(batch)
    assert bool(qmask.all())
    off = LateInteractionEncoder.from_pretrained(tiny_encoder_dir, query_max_length=10)
    assert off.tokenize_queries(["cells divide"])["input_ids"].shape[1] == len(plain)


def test_punctuation_masking_drops_passage_punctuation(tiny_encoder_dir):
    """Guards the optional punctuation mask: '.' and ',' tokens must not be matchable."""
    enc = LateInteractionEncoder.from_pretrained(tiny_encoder_dir, mask_punctuation=True)
    batch = enc.tokenize_passages(["cells, divide."])
    tokens, mask = enc.embed_passages(batch)
    words = enc.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert [w for w, m in zip(words, mask[0].tolist(), strict=True) if not m] == [",", "."]
    assert tokens.shape[:2] == mask.shape


def test_embeddings_are_normalised_projected_and_trainable(tiny_encoder_dir):
    """Guards the student use: token vectors are unit length in projection_dim and gradients
    reach the encoder and the projection through MaxSim."""
    enc = LateInteractionEncoder.from_pretrained(tiny_encoder_dir, projection_dim=8)
    (q, qm), (p, pm) = enc(enc.tokenize_queries(["cells divide"]),
                           enc.tokenize_passages(["Cells divide by mitosis."]))
    assert q.shape[-1] == 8 and p.shape[-1] == 8
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(q.shape[:2]))
    enc.maxsim(q, qm, p, pm).sum().backward()
    assert enc.projection.weight.grad is not None
    assert any(w.grad is not None for w in enc.encoder.parameters())


def test_save_load_round_trip_keeps_scores_projection_and_options(tmp_path, tiny_encoder_dir):
    """Guards save/load: a reloaded model (projection weight + options json) scores the same,
    and a fresh projection is seeded so two loads of one folder agree."""
    enc = LateInteractionEncoder.from_pretrained(tiny_encoder_dir, projection_dim=8,
                                                 similarity="l2", query_max_length=12,
                                                 query_augmentation=True).eval()
    again = LateInteractionEncoder.from_pretrained(tiny_encoder_dir, projection_dim=8)
    torch.testing.assert_close(enc.projection.weight, again.projection.weight)
    with torch.no_grad():
        enc.projection.weight.mul_(2.0)  # differ from the seeded init
    out = enc.save(tmp_path / "li")
    assert (out / PROJECTION_FILE).exists() and (out / OPTIONS_FILE).exists()
    loaded = LateInteractionEncoder.from_pretrained(out).eval()
    assert loaded.options == enc.options
    q_in = enc.tokenize_queries(["what lowers fracture risk"])
    p_in = enc.tokenize_passages(["Vitamin D lowers the risk of fractures."])
    with torch.no_grad():
        before = enc.maxsim(*enc.embed_queries(q_in), *enc.embed_passages(p_in))
        after = loaded.maxsim(*loaded.embed_queries(q_in), *loaded.embed_passages(p_in))
    torch.testing.assert_close(before, after)
    assert math.isfinite(before.item()) and before.item() <= 0  # l2 scores are <= 0
    with pytest.raises(ConfigError, match="projection"):
        LateInteractionEncoder.from_pretrained(out, projection_dim=4)
