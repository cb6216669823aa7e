"""Pure tensor-train maths on conv kernels: TT-SVD, reconstruction, and the PTT cross fit.

No modules here, only tensors in and tensors out, so each function is tested alone (tensorly's
split of `decomposition/_tt.py` from the class wrapping it).

Shapes (the TT-SNN paper): a kernel W (Cout, Cin, kh, kw) is permuted to (Cin, kh, kw, Cout) and split into
G1 (1, Cin, r1), G2 (r1, kh, r2), G3 (r2, kw, r3), G4 (r3, Cout, 1).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import tensorly as tl
import torch
from tensorly.decomposition import tensor_train

Ranks = tuple[int, int, int]


def max_tt_ranks(kernel_shape: tuple[int, ...]) -> Ranks:
    """The largest meaningful TT ranks of a (Cout, Cin, kh, kw) kernel: the unfolding sizes.

    TT-SVD caps r_k at min(prod(dims[:k]), prod(dims[k:])) of the (Cin, kh, kw, Cout) tensor, and
    tensorly does so silently: we compute the caps ourselves to report effective ranks.
    """
    cout, cin, kh, kw = kernel_shape
    dims = (cin, kh, kw, cout)
    caps = []
    for k in range(1, 4):
        left = math.prod(dims[:k])
        right = math.prod(dims[k:])
        caps.append(min(left, right))
    return caps[0], caps[1], caps[2]


def tensor_tt_params(dims: tuple[int, ...], ranks: tuple[int, ...]) -> int:
    """Weights of the TT cores of a tensor of `dims` at inner ranks `ranks`: sum_k r_(k-1) n_k r_k
    (r_0 = r_d = 1). Every kind's cores are this count of its TT tensor (`conv2d_tensor`,
    `conv1d_tensor`, `matrix_tensor`), which is what lets one allocator budget them all."""
    bonds = (1, *ranks, 1)
    return sum(bonds[k] * n * bonds[k + 1] for k, n in enumerate(dims))


def conv2d_tensor(weight: torch.Tensor) -> torch.Tensor:
    """The (Cin, kh, kw, Cout) tensor whose TT-SVD gives a Conv2d's four cores (not copied)."""
    return weight.detach().permute(1, 2, 3, 0)


def tt_param_count(kernel_shape: tuple[int, ...], ranks: Ranks) -> int:
    """Weights of the four cores: Cin*r1 + kh*r1*r2 + kw*r2*r3 + r3*Cout (bias not included)."""
    cout, cin, kh, kw = kernel_shape
    r1, r2, r3 = ranks
    return cin * r1 + kh * r1 * r2 + kw * r2 * r3 + r3 * cout


@dataclass(frozen=True)
class TTCores:
    """The four cores as the convolutions use them (float64 while fitting).

    first (r1, Cin), vertical (kh, r2, r1) as [tap, out, in], horizontal (kw, r3, r2), last (Cout, r3).
    """

    first: torch.Tensor
    vertical: torch.Tensor
    horizontal: torch.Tensor
    last: torch.Tensor

    @property
    def ranks(self) -> Ranks:
        return (self.first.shape[0], self.vertical.shape[1], self.horizontal.shape[1])


def qr_truncated_svd(matrix: torch.Tensor, n_eigenvecs: int | None = None, **_: object) -> tuple[torch.Tensor, ...]:
    """Truncated SVD for tensorly's TT-SVD, through a QR of the long side first.

    A conv kernel's first TT unfolding is wide (Cin x kh*kw*Cout, e.g. 512 x 4608); LAPACK's SVD
    of it costs several times a QR of its transpose followed by the SVD of the small square R.
    Same factorisation up to float64 rounding; tensorly still does the TT-SVD and the sign flips.
    """
    rows, cols = matrix.shape
    if rows * 2 <= cols:
        q, r = torch.linalg.qr(matrix.T)
        u, s, vt = torch.linalg.svd(r.T)
        vt = vt @ q.T
    elif cols * 2 <= rows:
        q, r = torch.linalg.qr(matrix)
        u, s, vt = torch.linalg.svd(r)
        u = q @ u
    else:
        u, s, vt = torch.linalg.svd(matrix, full_matrices=False)
    keep = min(rows, cols) if n_eigenvecs is None else n_eigenvecs
    return u[:, :keep], s[:keep], vt[:keep]


SVD_METHODS = ("qr_svd", "truncated_svd", "symeig_svd", "randomized_svd")


def tt_svd(weight: torch.Tensor, ranks: Ranks, svd: str = "qr_svd") -> TTCores:
    """TT-SVD of a conv kernel with tensorly, in float64, at ranks no larger than `max_tt_ranks`.

    The caller caps the ranks first (tensorly would cap silently and we must report the truth).
    tensorly's backend is switched only inside `tl.backend_context`, so importing or calling ttsnn
    never changes a user's global tensorly backend.
    """
    caps = max_tt_ranks(tuple(weight.shape))
    if svd not in SVD_METHODS:
        raise ValueError(f"unknown SVD method {svd!r}; choose one of {', '.join(SVD_METHODS)}")
    if any(r > c for r, c in zip(ranks, caps)):
        raise ValueError(f"ranks {ranks} exceed the kernel's TT ranks {caps}")
    tensor = weight.detach().to(torch.float64).cpu().permute(1, 2, 3, 0).contiguous()
    with tl.backend_context("pytorch"):
        method = qr_truncated_svd if svd == "qr_svd" else svd
        factors = tensor_train(tensor, rank=[1, *ranks, 1], svd=method).factors
    g1, g2, g3, g4 = (f.detach() for f in factors)
    return TTCores(
        first=g1[0].T.contiguous(),  # (Cin, r1) -> (r1, Cin)
        vertical=g2.permute(1, 2, 0).contiguous(),  # (r1, kh, r2) -> (kh, r2, r1)
        horizontal=g3.permute(1, 2, 0).contiguous(),  # (r2, kw, r3) -> (kw, r3, r2)
        last=g4[:, :, 0].T.contiguous(),  # (r3, Cout) -> (Cout, r3)
    )


def stt_kernel(cores: TTCores) -> torch.Tensor:
    """The dense kernel (Cout, Cin, kh, kw) the sequential chain computes: the TT reconstruction."""
    return torch.einsum("or,brs,asp,pi->oiab", cores.last, cores.horizontal, cores.vertical, cores.first)


def cross_kernel(cores: TTCores, kernel_size: tuple[int, int]) -> torch.Tensor:
    """The effective kernel of PTT: Y = G4 ((G2 A + G3 A) / 2), a centre column plus a centre row.

    The vertical (kh x 1) branch stands at column `centre_tap(kw)`, the horizontal (1 x kw) branch at
    row `centre_tap(kh)`; the centre tap gets half of each.
    """
    kh, kw = kernel_size
    ac, bc = centre_tap(kh), centre_tap(kw)
    cout, cin = cores.last.shape[0], cores.first.shape[1]
    dtype = cores.first.dtype
    kernel = torch.zeros(cout, cin, kh, kw, dtype=dtype)
    column = torch.einsum("or,arp,pi->oia", cores.last, cores.vertical, cores.first)
    row = torch.einsum("or,brp,pi->oib", cores.last, cores.horizontal, cores.first)
    kernel[:, :, :, bc] += column / 2
    kernel[:, :, ac, :] += row / 2
    return kernel


def reduced_kernel(cores: TTCores) -> torch.Tensor:
    """The (Cout, Cin) matrix of HTT's reduced steps: G4 G1 (1x1 -> 1x1, no spatial cores)."""
    return cores.last @ cores.first


def centre_tap(size: int) -> int:
    """The tap a 1-wide branch stands for: the middle, or the left of the two middles when even."""
    return (size - 1) // 2


def cross_placement(kh: int, kw: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The constant (kh*kw, kh+kw) matrix that places a PTT layer's two branch taps into its cross
    kernel, halved: column tap a at (a, centre column), row tap b at (centre row, b). One product
    with it builds the cross (`TTConv2d.dense_kernel`), where pads and adds would be four launches.
    Eager runs reuse one per shape, dtype and device; a compiled graph makes its own on the device
    (the compiler folds it; a cached tensor made on the host would keep a CUDA graph from forming)."""
    if torch.compiler.is_compiling():
        return _placement(kh, kw, dtype, device)
    return _cached_placement(kh, kw, dtype, device)


def _placement(kh: int, kw: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    placement = torch.zeros(kh, kw, kh + kw, dtype=dtype, device=device)
    rows, columns = torch.arange(kh, device=device), torch.arange(kw, device=device)
    placement[rows, centre_tap(kw), rows] = 0.5
    placement[centre_tap(kh), columns, kh + columns] = 0.5
    return placement.reshape(kh * kw, kh + kw)


_cached_placement = functools.lru_cache(maxsize=64)(_placement)


def relative_error(approx: torch.Tensor, target: torch.Tensor) -> float:
    """||approx - target|| / ||target|| in float64 (0 for an all-zero target matched exactly)."""
    target = target.detach().to(torch.float64).cpu()
    diff = torch.linalg.norm(approx.detach().to(torch.float64).cpu() - target)
    norm = torch.linalg.norm(target)
    if norm == 0:
        return float(diff)
    return float(diff / norm)


def _top_eigenvectors(gram: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` leading eigenvectors of a symmetric PSD matrix (= leading left singular vectors)."""
    _, vectors = torch.linalg.eigh(gram)
    return vectors[:, -count:].flip(-1)


def fit_cross_cores(weight: torch.Tensor, start: TTCores, iterations: int = 10, tolerance: float = 1e-5) -> TTCores:
    """Least-squares PTT cores for a dense kernel, starting from the TT-SVD cores.

    PTT's kernel is zero off the centre row and column, so the best it can do is match the cross
    slices S_j = W[:, :, a, b] for (a, b) on the cross. With shared G1 (r x Cin) and G4 (Cout x r),
    that is a Tucker-2 problem S_j ~ G4 M_j G1, solved by higher-order orthogonal iteration (HOOI)
    from the TT-SVD subspaces; M_j then maps back to the branch taps (the centre is shared equally).
    Each HOOI half-step takes the leading eigenvectors of a small Gram matrix (Cout x Cout or
    Cin x Cin), and the iteration stops once the fitted energy stops growing.
    Requires r1 = r2 = r3 = r <= min(Cin, Cout).
    """
    cout, cin, kh, kw = weight.shape
    rank = start.first.shape[0]
    if start.ranks != (rank, rank, rank):
        raise ValueError(f"PTT needs equal ranks, got {start.ranks}")
    ac, bc = centre_tap(kh), centre_tap(kw)
    w = weight.detach().to(torch.float64).cpu()
    taps = [(a, bc) for a in range(kh)] + [(ac, b) for b in range(kw) if b != bc]
    slices = torch.stack([w[:, :, a, b] for a, b in taps])  # (n, Cout, Cin)

    # Start from the TT-SVD subspaces: orthonormal bases of G1's rows and G4's columns.
    u_out = torch.linalg.qr(start.last.to(torch.float64))[0][:, :rank]  # (Cout, r)
    u_in = torch.linalg.qr(start.first.to(torch.float64).T)[0][:, :rank]  # (Cin, r)
    captured = 0.0
    for _ in range(iterations):
        projected_in = slices @ u_in  # (n, Cout, r)
        u_out = _top_eigenvectors(torch.einsum("nor,npr->op", projected_in, projected_in), rank)
        projected_out = u_out.T @ slices  # (n, r, Cin)
        gram_in = torch.einsum("nri,nrj->ij", projected_out, projected_out)
        u_in = _top_eigenvectors(gram_in, rank)
        now = float(torch.einsum("ij,ir,jr->", gram_in, u_in, u_in))  # ||core||^2, the energy fitted
        if now - captured <= tolerance * max(now, 1e-300):
            break
        captured = now
    middle = torch.einsum("noi,or,is->nrs", slices, u_out, u_in)  # (n, r_out, r_in)

    vertical = torch.zeros(kh, rank, rank, dtype=torch.float64)
    horizontal = torch.zeros(kw, rank, rank, dtype=torch.float64)
    for (a, b), m in zip(taps, middle):
        if (a, b) == (ac, bc):
            vertical[a] = m
            horizontal[b] = m
        elif b == bc:
            vertical[a] = 2 * m
        else:
            horizontal[b] = 2 * m
    return TTCores(first=u_in.T.contiguous(), vertical=vertical, horizontal=horizontal, last=u_out.contiguous())


# ------------------------------------------------------------------------------ other layer shapes
def _tt_factors(tensor: torch.Tensor, ranks: list[int], svd: str) -> list[torch.Tensor]:
    """tensorly's TT-SVD of a float64 tensor at inner ranks `ranks` (already capped by the caller)."""
    if svd not in SVD_METHODS:
        raise ValueError(f"unknown SVD method {svd!r}; choose one of {', '.join(SVD_METHODS)}")
    with tl.backend_context("pytorch"):
        method = qr_truncated_svd if svd == "qr_svd" else svd
        return [f.detach() for f in tensor_train(tensor, rank=[1, *ranks, 1], svd=method).factors]


def unfolding_caps(dims: tuple[int, ...]) -> tuple[int, ...]:
    """The largest TT ranks of a tensor of `dims`: min(prod(dims[:k]), prod(dims[k:])) per inner bond."""
    return tuple(min(math.prod(dims[:k]), math.prod(dims[k:])) for k in range(1, len(dims)))


def tt_unfoldings(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The TT unfoldings (prod(dims[:k]) x rest) of a tensor, float64, one per inner bond."""
    t = tensor.detach().to(torch.float64).cpu()
    return [t.reshape(math.prod(t.shape[:k]), -1) for k in range(1, t.dim())]


# Conv1d: W (Cout, Cin, k) -> (Cin, k, Cout) -> G1 (1, Cin, r1), G2 (r1, k, r2), G3 (r2, Cout, 1).
Ranks1d = tuple[int, int]


@dataclass(frozen=True)
class TTCores1d:
    """The three cores of a Conv1d as the convolutions use them: first (r1, Cin), middle (k, r2, r1)
    as [tap, out, in], last (Cout, r2)."""

    first: torch.Tensor
    middle: torch.Tensor
    last: torch.Tensor

    @property
    def ranks(self) -> Ranks1d:
        return (self.first.shape[0], self.middle.shape[1])


def conv1d_tensor(weight: torch.Tensor) -> torch.Tensor:
    """The (Cin, k, Cout) float64 tensor whose TT-SVD gives a Conv1d's cores."""
    return weight.detach().to(torch.float64).cpu().permute(1, 2, 0).contiguous()


def max_tt_ranks_1d(kernel_shape: tuple[int, ...]) -> Ranks1d:
    """Largest meaningful (r1, r2) of a (Cout, Cin, k) kernel: min(Cin, k*Cout), min(Cin*k, Cout)."""
    cout, cin, k = kernel_shape
    caps = unfolding_caps((cin, k, cout))
    return caps[0], caps[1]


def tt_param_count_1d(kernel_shape: tuple[int, ...], ranks: Ranks1d) -> int:
    """Weights of the three cores: Cin*r1 + k*r1*r2 + r2*Cout (bias not included)."""
    cout, cin, k = kernel_shape
    r1, r2 = ranks
    return cin * r1 + k * r1 * r2 + r2 * cout


def tt_svd_conv1d(weight: torch.Tensor, ranks: Ranks1d, svd: str = "qr_svd") -> TTCores1d:
    """TT-SVD of a (Cout, Cin, k) kernel into three cores, float64, ranks no larger than the caps."""
    caps = max_tt_ranks_1d(tuple(weight.shape))
    if any(r > c for r, c in zip(ranks, caps)):
        raise ValueError(f"ranks {ranks} exceed the kernel's TT ranks {caps}")
    g1, g2, g3 = _tt_factors(conv1d_tensor(weight), list(ranks), svd)
    return TTCores1d(
        first=g1[0].T.contiguous(),  # (Cin, r1) -> (r1, Cin)
        middle=g2.permute(1, 2, 0).contiguous(),  # (r1, k, r2) -> (k, r2, r1)
        last=g3[:, :, 0].T.contiguous(),  # (r2, Cout) -> (Cout, r2)
    )


def conv1d_kernel(cores: TTCores1d) -> torch.Tensor:
    """The dense (Cout, Cin, k) kernel of the three-core chain: the TT reconstruction."""
    return torch.einsum("os,asr,ri->oia", cores.last, cores.middle, cores.first)


# TT-matrix: W (out, in) with out = m1*...*md, in = n1*...*nd; core k is (r_{k-1}, m_k, n_k, r_k).
def factorize(size: int, parts: int) -> tuple[int, ...]:
    """`size` as a product of `parts` factors, as balanced as its prime factors allow.

    The rule (documented in docs/compression.md): take the prime factors, largest first, and multiply each
    into the currently smallest factor; pad with 1s when `size` has fewer prime factors than
    `parts`; sort largest first. 784, 3 -> (14, 8, 7); 1000, 3 -> (10, 10, 10); 10, 3 -> (5, 2, 1);
    a prime p -> (p, 1, ..., 1) (exact, but such a side does not compress).
    """
    if size < 1 or parts < 1:
        raise ValueError(f"cannot factorise {size} into {parts} factors")
    primes: list[int] = []
    rest, p = size, 2
    while p * p <= rest:
        while rest % p == 0:
            primes.append(p)
            rest //= p
        p += 1
    if rest > 1:
        primes.append(rest)
    factors = [1] * parts
    for prime in sorted(primes, reverse=True):
        smallest = min(range(parts), key=lambda i: factors[i])
        factors[smallest] *= prime
    return tuple(sorted(factors, reverse=True))


def matrix_tensor(weight: torch.Tensor, out_factors: tuple[int, ...], in_factors: tuple[int, ...]) -> torch.Tensor:
    """W (out, in) as the d-way tensor (m1*n1, ..., md*nd) whose TT-SVD is the TT-matrix, float64."""
    d = len(out_factors)
    w = weight.detach().to(torch.float64).cpu().reshape(*out_factors, *in_factors)
    order = [i for k in range(d) for i in (k, d + k)]
    return w.permute(order).reshape([m * n for m, n in zip(out_factors, in_factors)]).contiguous()


def max_tt_matrix_ranks(out_factors: tuple[int, ...], in_factors: tuple[int, ...]) -> tuple[int, ...]:
    """The d - 1 largest meaningful TT-matrix ranks (the unfolding sizes of `matrix_tensor`)."""
    return unfolding_caps(tuple(m * n for m, n in zip(out_factors, in_factors)))


def tt_matrix_param_count(out_factors: tuple[int, ...], in_factors: tuple[int, ...], ranks: tuple[int, ...]) -> int:
    """Weights of the cores: sum_k r_{k-1} m_k n_k r_k (bias not included)."""
    bonds = (1, *ranks, 1)
    return sum(bonds[k] * m * n * bonds[k + 1] for k, (m, n) in enumerate(zip(out_factors, in_factors)))


def tt_matrix_svd(
    weight: torch.Tensor, out_factors: tuple[int, ...], in_factors: tuple[int, ...], ranks: tuple[int, ...],
    svd: str = "qr_svd",
) -> list[torch.Tensor]:
    """TT-SVD of a (out, in) weight as a TT-matrix: cores (r_{k-1}, m_k, n_k, r_k), float64."""
    if len(out_factors) != len(in_factors) or len(ranks) != len(out_factors) - 1:
        raise ValueError(f"TT-matrix needs d out factors, d in factors and d - 1 ranks; got "
                         f"{out_factors}, {in_factors}, {ranks}")
    if math.prod(out_factors) != weight.shape[0] or math.prod(in_factors) != weight.shape[1]:
        raise ValueError(f"factors {out_factors} x {in_factors} do not multiply to the weight {tuple(weight.shape)}")
    caps = max_tt_matrix_ranks(out_factors, in_factors)
    if any(r > c for r, c in zip(ranks, caps)):
        raise ValueError(f"ranks {ranks} exceed the weight's TT-matrix ranks {caps}")
    factors = _tt_factors(matrix_tensor(weight, out_factors, in_factors), list(ranks), svd)
    return [f.reshape(f.shape[0], m, n, f.shape[-1]).contiguous()
            for f, m, n in zip(factors, out_factors, in_factors)]


def tt_matrix_weight(cores: list[torch.Tensor]) -> torch.Tensor:
    """The dense (out, in) matrix of TT-matrix cores (r_{k-1}, m_k, n_k, r_k): the reconstruction."""
    full = cores[0]  # (1, M, N, r)
    for core in cores[1:]:
        r0, m, n, r1 = core.shape
        full = torch.einsum("aMNr,rmns->aMmNns", full, core)
        full = full.reshape(1, full.shape[1] * m, full.shape[3] * n, r1)
    return full[0, :, :, 0]
