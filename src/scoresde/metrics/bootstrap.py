"""FID's uncertainty: the Frechet distance of resampled feature moments and paired bootstrap
intervals (see the package docstring)."""

from __future__ import annotations

import math

import torch


def _resampled_moments(f: torch.Tensor, counts: torch.Tensor):
    """Mean (B, D) and unbiased covariance (B, D, D) of B resamples given by multiplicities."""
    n = f.shape[0]
    w = counts.to(f.dtype)
    mu = w @ f / n
    second = (w[:, :, None] * f).transpose(1, 2) @ f
    cov = (second - n * mu[:, :, None] * mu[:, None, :]) / (n - 1)
    return mu, cov


def _sqrtm_psd(cov: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of (batched) covariance matrices."""
    lam, v = torch.linalg.eigh(cov)
    return (v * lam.clamp(min=0).sqrt()[..., None, :]) @ v.transpose(-1, -2)


def frechet_distance(mu1, cov1, mu2, cov2, root2=None) -> torch.Tensor:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017, eq. 6), batched.

    tr (S1 S2)^(1/2) = tr (R S1 R)^(1/2) with R = S2^(1/2): the sum of the square roots of the
    eigenvalues of a symmetric positive semi-definite matrix (the same eigenvalues as S1 S2,
    whose square roots torch-fidelity sums). ``root2``: S2^(1/2) if already known.
    """
    r = _sqrtm_psd(cov2) if root2 is None else root2
    lam = torch.linalg.eigvalsh(r @ cov1 @ r)
    tr_sqrt = lam.clamp(min=0).sqrt().sum(-1)
    diff = mu1 - mu2
    trace = cov1.diagonal(dim1=-2, dim2=-1).sum(-1) + cov2.diagonal(dim1=-2, dim2=-1).sum(-1)
    return (diff * diff).sum(-1) + trace - 2 * tr_sqrt


def paired_streams(seed: int) -> tuple[int, int]:
    """(reference seed, sample seed): the two spawned streams of ``seed`` that every paired
    bootstrap here draws from, the reference set's resamples once, each sample set's afresh."""
    import numpy as np

    ref, sample = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(2))
    return ref, sample


def _counts(n: int, b: int, generator: torch.Generator) -> torch.Tensor:
    """Multiplicities (b, n) of b resamples of n items with replacement."""
    idx = torch.randint(n, (b, n), generator=generator)
    return torch.zeros(b, n, dtype=torch.long).scatter_add_(1, idx, torch.ones_like(idx))


class BootstrapFID:
    """FID of resamples (with replacement) of a sample set and of the reference set.

    The reference set's ``n_bootstrap`` resamples (and their means and covariances) are drawn
    once, from ``seed``'s first spawned stream; each sample set's resamples come from its second
    stream, restarted for every set. So two sample sets of the same size get the same resample
    indices and the same reference resamples: their replicates are paired, and the difference of
    two cases' replicates is a paired bootstrap of the difference of their FIDs (sample i of every
    case shares sample i's seed; all cases share the reference set). Memory: 8 B D^2 bytes.
    """

    def __init__(self, f_reference: torch.Tensor, n_bootstrap: int, seed: int, chunk: int = 50):
        ref_seed, self._sample_seed = paired_streams(seed)
        self.n_bootstrap, self.seed, self.chunk = n_bootstrap, seed, chunk
        self.n_reference = len(f_reference)
        counts = _counts(len(f_reference), n_bootstrap, torch.Generator().manual_seed(ref_seed))
        f = f_reference.double().cpu()
        self._ref = []
        for i in range(0, n_bootstrap, chunk):
            mu, cov = _resampled_moments(f, counts[i : i + chunk])
            self._ref.append((mu, cov, _sqrtm_psd(cov)))

    def replicates(self, f_samples: torch.Tensor) -> torch.Tensor:
        """FID of each of the ``n_bootstrap`` paired resamples, float64 (B,)."""
        f = f_samples.double().cpu()
        counts = _counts(len(f), self.n_bootstrap, torch.Generator().manual_seed(self._sample_seed))
        out = [frechet_distance(*_resampled_moments(f, counts[i : i + self.chunk]), *ref)
               for i, ref in zip(range(0, self.n_bootstrap, self.chunk), self._ref, strict=True)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def bootstrap_interval(estimate: float, replicates, confidence: float = 0.95) -> tuple[float, float]:
    """Central ``confidence`` interval: the estimate plus the percentiles of the recentred replicates.

    A resample repeats about a third of its images, which raises FID's small-sample bias (on
    digits, n = 400: replicates average 0.55 above the full-set FID of 0.97), so the plain
    percentile interval would miss the estimate. Recentring the replicates on their mean keeps
    the bootstrap's spread and removes that extra bias: ``estimate + q(r - mean(r))``.
    """
    r = torch.as_tensor(replicates, dtype=torch.float64)
    r = r[torch.isfinite(r)]
    if r.numel() < 2 or not math.isfinite(estimate):
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    q = torch.quantile(r - r.mean(), torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return estimate + float(q[0]), estimate + float(q[1])


def poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's kernel (Binkowski et al. 2018; torch-fidelity's default): (x.y / d + 1)^3."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def _weighted_pair_sums(f: torch.Tensor, counts: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """sum over resampled positions a != b of k(x_a, x_b), for multiplicities (B, N): w^T K w minus
    each position paired with itself (sum_j w_j k(x_j, x_j)), K built by row chunks."""
    w = counts.double()
    total = torch.zeros(len(w), dtype=torch.float64)
    for i in range(0, len(f), chunk):
        k = poly_kernel(f[i : i + chunk], f)
        total += ((w @ k.T) * w[:, i : i + chunk]).sum(1)
    diag = ((f * f).sum(1) / f.shape[1] + 1) ** 3
    return total - w @ diag


def kid_subset_weights(n_samples: int, n_reference: int, size: int, subsets: int = 100,
                       seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """torch-fidelity's KID subsets as 0 / 1 weights: (subsets, n_samples) and (subsets,
    n_reference), the same draws as ``kid_features_to_metric`` (``np.random.RandomState(seed)``,
    per subset a sample subset then a reference subset of ``size``, without replacement)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    w_s = torch.zeros(subsets, n_samples, dtype=torch.float64)
    w_r = torch.zeros(subsets, n_reference, dtype=torch.float64)
    for i in range(subsets):
        w_s[i, torch.from_numpy(rng.choice(n_samples, size, replace=False))] = 1.0
        w_r[i, torch.from_numpy(rng.choice(n_reference, size, replace=False))] = 1.0
    return w_s, w_r


class BootstrapKID:
    """Replicates of the unbiased MMD^2 (KID's estimator on the whole sets, polynomial kernel)
    under the same kind of paired resampling as :class:`BootstrapFID`, and KID itself
    (torch-fidelity's mean and s.d. over ``kid_subsets`` subsets), from one pass over each sample
    set's kernels.

    Every resample and every KID subset is a weighting of the sample set's rows (multiplicities,
    or 0 / 1 for a subset) and of the reference set's: its MMD^2 is made of w^T K w sums. So a
    case's kernels K(f, f) and K(f, reference) are built once (in row chunks, no R x R matrix
    kept) and every resample and subset is read off them; the reference set's resamples and
    subsets, and their kernel sums, are computed once per job (per sample-set size, for the
    subsets). A KID subset of the whole sample set (``kid_subset_size`` = the number of samples)
    is the same rows every time. Each sample set's resamples come from a stream restarted for
    every set; the subsets are torch-fidelity's draws (:func:`kid_subset_weights`), so ``kid`` is
    its KID to rounding.
    """

    def __init__(self, f_reference: torch.Tensor, n_bootstrap: int, seed: int,
                 kid_subset_size: int | None = None, kid_seed: int = 0, kid_subsets: int = 100):
        ref_seed, self._sample_seed = paired_streams(seed + 1)
        self.n_bootstrap, self.f_reference = n_bootstrap, f_reference.double().cpu()
        self.kid_subset_size, self.kid_seed, self.kid_subsets = kid_subset_size, kid_seed, kid_subsets
        r = len(self.f_reference)
        self._c_reference = _counts(r, n_bootstrap, torch.Generator().manual_seed(ref_seed)).double()
        self._rr = _weighted_pair_sums(self.f_reference, self._c_reference) / (r * (r - 1))
        self._subsets: dict[int, tuple] = {}

    def subset_size(self, n_samples: int) -> int:
        """KID's subset size for ``n_samples`` samples: ``kid_subset_size`` or min(1000, n // 2)
        for n the smaller set (as :func:`~scoresde.metrics.fidelity.fid_kid_from_features`)."""
        n_min = min(n_samples, len(self.f_reference))
        size = self.kid_subset_size or max(2, min(1000, n_min // 2))
        if not 2 <= size <= n_min:
            raise ValueError(f"kid_subset_size={size} must be in 2..{n_min} (the smaller set)")
        return size

    def _kid_weights(self, n_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(sample weights, reference weights, reference pair sums, size) of the KID subsets."""
        if n_samples not in self._subsets:
            size = self.subset_size(n_samples)
            w_s, w_r = kid_subset_weights(n_samples, len(self.f_reference), size, self.kid_subsets,
                                          self.kid_seed)
            self._subsets[n_samples] = (w_s, w_r, _weighted_pair_sums(self.f_reference, w_r), size)
        return self._subsets[n_samples]

    def measure(self, f_samples: torch.Tensor, kid: bool = True) -> dict:
        """``{"replicates": float64 (n_bootstrap,), "kid", "kid_std"}`` of one sample set, its
        kernels built once for the resamples and the KID subsets together (``kid=False``: the
        replicates alone, KID None)."""
        f = f_samples.double().cpu()
        s, r, b = len(f), len(self.f_reference), self.n_bootstrap
        c = _counts(s, b, torch.Generator().manual_seed(self._sample_seed)).double()
        if kid:
            w_s, w_r, kid_rr, m = self._kid_weights(s)
        else:
            w_s, w_r, kid_rr, m = c[:0], self._c_reference[:0], None, 0
        weights = torch.cat([c, w_s])  # every resample, then every subset: one pass over the kernels
        w_ref = torch.cat([self._c_reference, w_r])
        ss = _weighted_pair_sums(f, weights)
        sr = sum(((weights @ poly_kernel(f, self.f_reference[i : i + 2048]))
                  * w_ref[:, i : i + 2048]).sum(1) for i in range(0, r, 2048))  # fmt: skip
        replicates = ss[:b] / (s * (s - 1)) + self._rr - 2 * sr[:b] / (s * r)
        if not kid:
            return {"replicates": replicates, "kid": None, "kid_std": None}
        mmd = (ss[b:] + kid_rr) / (m * (m - 1)) - 2 * sr[b:] / (m * m)
        return {"replicates": replicates, "kid": float(mmd.mean()),
                "kid_std": float(mmd.std(correction=0))}

    def replicates(self, f_samples: torch.Tensor) -> torch.Tensor:
        """The unbiased MMD^2 of each of the ``n_bootstrap`` paired resamples, float64 (B,)."""
        return self.measure(f_samples, kid=False)["replicates"]
