"""maths.tt: TT-SVD recovers planted low-rank kernels exactly; the PTT cross fit is least squares."""

from __future__ import annotations

import tensorly as tl
import torch

from ttsnn_cli.maths import tt


def planted_kernel(cout: int, cin: int, kh: int, kw: int, ranks: tuple[int, int, int]) -> torch.Tensor:
    """A kernel of exact TT ranks `ranks`, built from random cores (random kernels do not compress)."""
    r1, r2, r3 = ranks
    cores = tt.TTCores(
        first=torch.randn(r1, cin, dtype=torch.float64),
        vertical=torch.randn(kh, r2, r1, dtype=torch.float64),
        horizontal=torch.randn(kw, r3, r2, dtype=torch.float64),
        last=torch.randn(cout, r3, dtype=torch.float64),
    )
    return tt.stt_kernel(cores).float()


def test_max_tt_ranks_are_the_unfolding_sizes() -> None:
    assert tt.max_tt_ranks((64, 32, 3, 3)) == (32, 96, 64)
    assert tt.max_tt_ranks((8, 512, 3, 5)) == (120, 40, 8)


def test_param_count_formula() -> None:
    assert tt.tt_param_count((64, 32, 3, 5), (4, 5, 6)) == 32 * 4 + 3 * 4 * 5 + 5 * 5 * 6 + 6 * 64


def test_planted_kernel_is_recovered_exactly_at_its_rank() -> None:
    for shape, ranks in [((24, 16, 3, 3), (4, 6, 5)), ((12, 20, 5, 3), (3, 3, 3)), ((16, 8, 3, 5), (8, 9, 7))]:
        kernel = planted_kernel(*shape, ranks)
        cores = tt.tt_svd(kernel, ranks)
        assert cores.ranks == ranks
        assert tt.relative_error(tt.stt_kernel(cores), kernel) < 1e-6
        # one rank fewer loses information: the test can fail
        smaller = (ranks[0], ranks[1] - 1, ranks[2])
        assert tt.relative_error(tt.stt_kernel(tt.tt_svd(kernel, smaller)), kernel) > 1e-3


def test_full_rank_reproduces_any_kernel() -> None:
    kernel = torch.randn(10, 7, 3, 5)
    cores = tt.tt_svd(kernel, tt.max_tt_ranks(tuple(kernel.shape)))
    assert tt.relative_error(tt.stt_kernel(cores), kernel) < 1e-12


def test_tensorly_backend_is_left_as_it_was() -> None:
    before = tl.get_backend()
    tt.tt_svd(torch.randn(4, 4, 3, 3), (2, 2, 2))
    assert tl.get_backend() == before == "numpy"


def test_cross_fit_is_exact_for_a_planted_cross_kernel() -> None:
    rank, cout, cin, k = 3, 10, 8, 3
    cores = tt.TTCores(
        first=torch.randn(rank, cin, dtype=torch.float64),
        vertical=torch.randn(k, rank, rank, dtype=torch.float64),
        horizontal=torch.randn(k, rank, rank, dtype=torch.float64),
        last=torch.randn(cout, rank, dtype=torch.float64),
    )
    target = tt.cross_kernel(cores, (k, k))
    start = tt.tt_svd(target.float(), (rank, rank, rank))
    fitted = tt.fit_cross_cores(target.float(), start)
    assert tt.relative_error(tt.cross_kernel(fitted, (k, k)), target) < 1e-5


def test_cross_fit_beats_the_plain_tt_svd_cores_and_cannot_match_corners() -> None:
    kernel = planted_kernel(12, 10, 3, 3, (4, 4, 4))
    start = tt.tt_svd(kernel, (4, 4, 4))
    fitted = tt.fit_cross_cores(kernel, start)
    fitted_error = tt.relative_error(tt.cross_kernel(fitted, (3, 3)), kernel)
    naive_error = tt.relative_error(tt.cross_kernel(start, (3, 3)), kernel)
    corners = kernel.clone()
    corners[:, :, 1, :] = 0
    corners[:, :, :, 1] = 0
    floor = float(corners.norm() / kernel.norm())
    assert floor - 1e-6 <= fitted_error < naive_error


def test_reduced_kernel_is_last_times_first() -> None:
    cores = tt.tt_svd(torch.randn(6, 5, 3, 3), (3, 3, 3))
    assert torch.allclose(tt.reduced_kernel(cores), cores.last @ cores.first)
