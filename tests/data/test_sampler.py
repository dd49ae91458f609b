"""The resumable training order: (seed, epoch) permutations, mid-epoch restarts, seeded views."""

from __future__ import annotations

import torch

from ssl_biases.data.sampler import EpochIndex, ResumableSampler, SeededViews


def test_order_depends_on_seed_and_epoch_only():
    data = range(20)
    first = list(ResumableSampler(data, seed=3))
    assert first == list(ResumableSampler(data, seed=3))
    assert sorted(i.index for i in first) == list(range(20)) and {i.epoch for i in first} == {0}
    again = ResumableSampler(data, seed=3)
    again.set_epoch(1)
    assert [i.index for i in again] != [i.index for i in first]
    assert [i.index for i in ResumableSampler(data, seed=4)] != [i.index for i in first]


def test_resume_skips_exactly_the_consumed_samples_once():
    data = range(20)
    full = ResumableSampler(data, seed=0)
    full.set_epoch(2)
    expected = list(full)
    sampler = ResumableSampler(data, seed=0)
    sampler.resume(epoch=2, consumed=8)
    sampler.set_epoch(2)  # Lightning sets the same epoch again: the position is kept
    assert list(sampler) == expected[8:] and len(sampler) == 20
    assert list(sampler) == expected  # the next pass of the epoch is whole again


def test_processes_share_one_permutation():
    shards = [list(ResumableSampler(range(10), seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(i.index for shard in shards for i in shard) == list(range(10))


def test_views_are_seeded_per_sample_and_leave_the_global_generator_alone():
    views = SeededViews([(torch.zeros(3), 0)] * 4, lambda x: x + torch.rand(3), seed=0)
    state = torch.get_rng_state()
    a, b = views[EpochIndex(0, 1)][0], views[EpochIndex(0, 1)][0]
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(a, views[EpochIndex(1, 1)][0])  # another epoch, another view
    assert not torch.equal(a, views[EpochIndex(0, 2)][0])  # another sample, another view
    assert torch.equal(views[1][0], a)  # a plain index is epoch 0
