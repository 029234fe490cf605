"""Per-sample seeding: a sample's latent depends on its seed alone."""
import pytest
import torch

from solvers.seeds import latents_for_seeds


@pytest.mark.invariance
def test_latent_of_a_seed_does_not_depend_on_its_batch():
    """Bit-identical by construction: each latent comes from its own seeded generator."""
    alone, _ = latents_for_seeds([5], (3, 4), dtype=torch.float64)
    batch, _ = latents_for_seeds(range(10), (3, 4), dtype=torch.float64)
    assert torch.equal(alone[0], batch[5])
    assert not torch.equal(batch[4], batch[5])


def test_latents_are_drawn_in_float64_then_cast():
    wide, _ = latents_for_seeds([1, 2], (8,), dtype=torch.float64)
    narrow, _ = latents_for_seeds([1, 2], (8,), dtype=torch.float32)
    assert narrow.dtype == torch.float32
    assert torch.equal(narrow, wide.float())
    expected = torch.randn((8,), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(wide[1], expected)


def test_labels_come_from_the_same_generator_right_after_the_latent():
    _, labels = latents_for_seeds([0, 9], (2,), dtype=torch.float64, label_dim=10)
    assert labels.shape == (2, 10) and torch.equal(labels.sum(1), torch.ones(2, dtype=torch.float64))
    gen = torch.Generator().manual_seed(9)
    torch.randn((2,), generator=gen, dtype=torch.float64)
    assert labels[1].argmax().item() == torch.randint(10, (1,), generator=gen).item()
    assert latents_for_seeds([0], (2,), label_dim=0)[1] is None
