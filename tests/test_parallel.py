"""cifarnet.parallel: image groups, one BLAS thread per group, no nesting."""
import numpy as np
import pytest

from cifarnet import blas, parallel


@pytest.mark.parametrize("n, per_chunk, groups, expected", [
    (128, 8, 2, [(0, 64), (64, 128)]),
    (128, 48, 2, [(0, 48), (48, 128)]),            # starts stay on chunk boundaries
    (7, 2, 3, [(0, 2), (2, 4), (4, 7)]),
    (5, 5, 2, [(0, 5)]),                           # one chunk: one group
])
def test_group_bounds_cover_the_batch_in_whole_chunks(n, per_chunk, groups, expected):
    bounds = parallel.group_bounds(n, per_chunk, groups)
    assert bounds == expected
    assert all(a % per_chunk == 0 for a, _ in bounds)


def test_groups_run_with_one_blas_thread_and_do_not_nest():
    if blas.blas_threads() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS whose threads can be set")
    before = blas.blas_threads()
    seen = []

    def work(a, b):
        inner = parallel.over_images(lambda c, d: (c, d), b - a, 1, np, 2)   # nested: runs serially
        seen.append((a, b, blas.blas_threads(), inner))
        return b - a
    assert parallel.over_images(work, 10, 2, np, 2) == [4, 6]
    assert sorted(seen) == [(0, 4, 1, [(0, 4)]), (4, 10, 1, [(0, 6)])]
    assert blas.blas_threads() == before


def test_single_group_leaves_blas_alone():
    before = blas.blas_threads()
    assert parallel.over_images(lambda a, b: blas.blas_threads(), 4, 4, np, 2) == [before]
