"""The peak memory of a block: what was allocated in it, whatever came before in the process."""

import time

import psutil
import pytest
import torch

from peftlab import memory

ALLOCATED = 128 * 2**20  # far above what the interpreter itself takes and frees meanwhile


def hold_cpu_memory() -> None:
    block = b"\x01" * ALLOCATED  # written, so resident (a zeroed one may be mapped lazily)
    time.sleep(4 * memory.SAMPLE_INTERVAL_S)  # long enough for the sampler to see it
    del block


MEASURES = [
    # Linux's high-water mark, which peftlab's tests and CI run on.
    pytest.param(memory.resident_high_water_mark, hold_cpu_memory, id="high-water-mark"),
    pytest.param(memory.sampled_resident, hold_cpu_memory, id="sampled"),
]


@pytest.mark.parametrize(("measure", "hold_memory"), MEASURES)
def test_a_block_sees_its_own_allocation_and_the_next_block_starts_afresh(measure, hold_memory):
    hold_memory()  # before any block: no part of any block's peak
    with measure() as without:
        pass
    with measure() as held:
        hold_memory()
    with measure() as after:
        pass
    assert held.bytes > without.bytes + 0.9 * ALLOCATED
    assert after.bytes < held.bytes - 0.9 * ALLOCATED


def test_a_block_is_measured_where_training_runs():
    with memory.peak() as measured:
        pass
    if torch.cuda.is_available():
        assert measured.bytes == torch.cuda.max_memory_allocated()
    else:  # resident: at least the interpreter and torch
        assert measured.bytes > 50 * 2**20


def free_memory_the_allocator_keeps() -> int:
    """Allocate ~640 MiB in tensors between small ones that stay, then free the tensors: glibc
    keeps that memory resident. Returns the resident size after freeing."""
    kept, freed = [], []
    for i in range(160):
        torch.ones(8_000_000)  # freed at once: glibc then serves the next sizes from its heap
        freed.append(torch.ones(1_000_000 + i))  # ~4 MiB each
        kept.append(torch.ones(16))
    del freed
    return psutil.Process().memory_info().rss


def test_memory_an_earlier_block_freed_is_no_part_of_the_next_ones_peak():
    resident = free_memory_the_allocator_keeps()
    with memory.peak() as measured:
        pass
    if not torch.cuda.is_available():
        assert measured.bytes < resident - 512 * 2**20
