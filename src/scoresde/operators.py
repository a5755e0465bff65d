"""Linear measurement operators A for inverse problems y = A x + sigma_y n (``scoresde.inverse``).

The protocol (duck-typed; :class:`LinearOperator` implements the optional parts):

* ``in_shape``: the shape of one x without the batch, e.g. ``(1, 8, 8)``;
* ``forward(x) -> (B, m)``: A applied to a batch x of shape (B, *in_shape), differentiable in x
  (DPS takes its gradient by autograd); the only method ``dps`` needs;
* ``adjoint(v) -> (B, *in_shape)``: A^T applied to a batch v of shape (B, m); needed by ``pigdm``
  (the guidance A^T (r^2 A A^T + sigma_y^2 I)^-1 (y - A x0)) and ``smc`` (the SVD of A);
* ``svd(dtype, device) -> (U (m, r), S (r,), V (D, r))`` (optional): the thin SVD A = U diag(S) V^T
  with S > 0; by default it is computed once from the dense matrix A = adjoint(I_m), which is
  cheap for the image sizes of this library (D up to a few thousand);
* ``gram_solve(v, r2, s2) -> (B, m)`` (optional): (r2 A A^T + s2 I)^-1 v with r2 of shape (B,) and
  s2 >= 0 a float; by default through the SVD (the pseudo-inverse on range(A) when s2 = 0).

A dense (m, D) tensor is wrapped into :class:`Dense` (acting on x flattened). Shipped operators:
:class:`Mask` (inpainting's observed entries), :class:`AvgPool` (super-resolution by k x k block
means), :class:`Blur` (separable Gaussian blur with reflect padding), :func:`random_projection`.
"""

from __future__ import annotations

import math

import torch

from . import checks


class LinearOperator:
    """Base class: subclasses set ``in_shape`` and implement ``forward`` and ``adjoint``."""

    in_shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        return math.prod(self.in_shape)

    def matrix(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """The dense (m, D) matrix, row j = adjoint(e_j) flattened."""
        m = self.forward(torch.zeros(1, *self.in_shape, dtype=dtype, device=device)).shape[1]
        return self.adjoint(torch.eye(m, dtype=dtype, device=device)).reshape(m, -1)

    def svd(self, dtype=torch.float64, device=None):
        """Thin SVD (U, S, V) of A keeping singular values above 1e-10 of the largest."""
        cache = self.__dict__.setdefault("_svd_cache", {})
        key = (dtype, str(device))
        if key not in cache:
            U, S, Vh = torch.linalg.svd(self.matrix(torch.float64, device), full_matrices=False)
            r = int((1e-10 * S.max() < S).sum()) if S.numel() else 0
            cache[key] = tuple(z.to(dtype) for z in (U[:, :r], S[:r], Vh[:r].T.contiguous()))
        return cache[key]

    def gram_solve(self, v: torch.Tensor, r2: torch.Tensor, s2: float) -> torch.Tensor:
        """(r2 A A^T + s2 I)^-1 v per sample; on range(A) only when s2 = 0 (pseudo-inverse)."""
        U, S, _ = self.svd(v.dtype, v.device)
        c = v @ U
        out = (c / (r2[:, None] * S**2 + s2)) @ U.T
        if s2 > 0:
            out = out + (v - c @ U.T) / s2
        return out


class Dense(LinearOperator):
    """A dense (m, D) matrix acting on x flattened; ``in_shape`` defaults to (D,)."""

    def __init__(self, A: torch.Tensor, in_shape=None):
        if not isinstance(A, torch.Tensor) or A.ndim != 2:
            shape = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
            raise ValueError(f"A must be a 2-D (m, D) tensor or an operator with forward/adjoint, "
                             f"got {shape}")
        self.A = checks.tensor("A", A, rank=2, what="(m, D)")
        self.in_shape = (A.shape[1],) if in_shape is None else checks.sizes("in_shape", in_shape)
        if math.prod(self.in_shape) != A.shape[1]:
            raise ValueError(f"A has D = {A.shape[1]} columns but in_shape {self.in_shape} has "
                             f"{math.prod(self.in_shape)} entries; they must match")

    def forward(self, x):
        return x.reshape(x.shape[0], -1) @ self.A.to(x).T

    def adjoint(self, v):
        return (v @ self.A.to(v)).reshape(v.shape[0], *self.in_shape)

    def matrix(self, dtype=torch.float64, device=None):
        return self.A.to(dtype=dtype, device=device)


class Mask(LinearOperator):
    """Keeps the entries where ``mask`` (of x's shape, without the batch) is 1, in flattened order:
    inpainting's observation (``scoresde.controllable.inpaint``), A A^T = I."""

    def __init__(self, mask: torch.Tensor):
        checks.tensor("mask", mask, floating=False, what="of 0 (missing) and 1 (observed)")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must hold only 0 (missing) and 1 (observed); got other values")
        self.in_shape = tuple(mask.shape)
        self.index = torch.nonzero(mask.reshape(-1)).squeeze(1)

    def forward(self, x):
        return x.reshape(x.shape[0], -1)[:, self.index.to(x.device)]

    def adjoint(self, v):
        out = v.new_zeros(v.shape[0], self.dim)
        out[:, self.index.to(v.device)] = v
        return out.reshape(v.shape[0], *self.in_shape)

    def svd(self, dtype=torch.float64, device=None):
        m = len(self.index)
        V = torch.zeros(self.dim, m, dtype=dtype, device=device)
        V[self.index.to(V.device), torch.arange(m, device=V.device)] = 1.0
        return torch.eye(m, dtype=dtype, device=device), torch.ones(m, dtype=dtype, device=device), V


class AvgPool(LinearOperator):
    """Super-resolution's measurement: the mean of each ``factor`` x ``factor`` block of a
    (C, H, W) image, flattened; A A^T = I / factor^2."""

    def __init__(self, in_shape, factor: int = 2):
        C, H, W = checks.sizes("in_shape", in_shape, rank=3)
        factor = checks.whole("factor", factor, 1)
        if H % factor or W % factor:
            raise ValueError(f"factor must be a positive integer dividing H = {H} and W = {W}, "
                             f"got {factor}")
        self.in_shape, self.factor = (C, H, W), int(factor)

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, self.factor).reshape(x.shape[0], -1)

    def adjoint(self, v):
        C, H, W = self.in_shape
        k = self.factor
        v = v.reshape(v.shape[0], C, H // k, W // k) / k**2
        return v.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)


def gaussian_blur_matrix(n: int, sigma: float, radius: int, dtype=torch.float64) -> torch.Tensor:
    """The (n, n) matrix of a 1-D Gaussian blur (taps exp(-k^2 / 2 sigma^2), k = -radius..radius,
    normalised) with reflect padding (x_{-k} = x_k, x_{n-1+k} = x_{n-1-k}, torch's ``reflect``)."""
    k = torch.arange(-radius, radius + 1, dtype=dtype)
    taps = torch.exp(-(k**2) / (2 * sigma**2))
    taps = taps / taps.sum()
    B = torch.zeros(n, n, dtype=dtype)
    for i in range(n):
        for tap, j in zip(taps.tolist(), range(i - radius, i + radius + 1), strict=True):
            j = -j if j < 0 else (2 * (n - 1) - j if j > n - 1 else j)
            B[i, j] += tap
    return B


class Blur(LinearOperator):
    """Separable Gaussian blur of a (C, H, W) image with reflect padding: x -> B_H x B_W^T per
    channel (``sigma`` in pixels, ``radius`` taps each side, default ceil(2 sigma) capped by the
    image size); m = D, full rank for the usual sigma."""

    def __init__(self, in_shape, sigma: float = 1.0, radius: int | None = None):
        C, H, W = checks.sizes("in_shape", in_shape, rank=3)
        sigma = checks.number("sigma", sigma, 0.0, open_lo=True)
        radius = min(math.ceil(2 * sigma), H - 1, W - 1) if radius is None else \
            checks.whole("radius", radius, 0)
        if not 0 <= radius < min(H, W):
            raise ValueError(f"blur radius must lie in [0, {min(H, W) - 1}] for reflect padding of "
                             f"a {H}x{W} image, got {radius}")
        self.in_shape, self.sigma, self.radius = (C, H, W), float(sigma), radius
        self.BH = gaussian_blur_matrix(H, sigma, radius)
        self.BW = gaussian_blur_matrix(W, sigma, radius)

    def forward(self, x):
        out = torch.einsum("ij,bcjk,lk->bcil", self.BH.to(x), x, self.BW.to(x))
        return out.reshape(x.shape[0], -1)

    def adjoint(self, v):
        v = v.reshape(v.shape[0], *self.in_shape)
        return torch.einsum("ji,bcjk,kl->bcil", self.BH.to(v), v, self.BW.to(v))


def random_projection(in_shape, m: int, generator: torch.Generator | None = None,
                      dtype=torch.float64) -> Dense:
    """m random orthonormal directions (rows of A, A A^T = I): a Gaussian matrix's QR factor."""
    D = math.prod(checks.sizes("in_shape", in_shape))
    m = checks.whole("m (the number of rows, 1 <= m <= D)", m, 1, D)
    checks.generator("generator", generator, on="cpu")
    checks.dtype("dtype", dtype)
    G = torch.randn(D, int(m), generator=generator, dtype=torch.float64)
    Q, _ = torch.linalg.qr(G)
    return Dense(Q.T.to(dtype).contiguous(), in_shape)


class _Wrapped(LinearOperator):
    """A user object with ``in_shape``, ``forward`` and perhaps ``adjoint`` / ``svd`` / ``gram_solve``."""

    def __init__(self, obj):
        self.obj, self.in_shape = obj, checks.sizes("A.in_shape", obj.in_shape)
        for name in ("svd", "gram_solve"):
            if callable(getattr(obj, name, None)):
                setattr(self, name, getattr(obj, name))

    def forward(self, x):
        return self.obj.forward(x)

    def adjoint(self, v):
        return self.obj.adjoint(v)


def has_adjoint(op) -> bool:
    return callable(getattr(op.obj, "adjoint", None)) if isinstance(op, _Wrapped) else True


def as_operator(A) -> LinearOperator:
    """``A`` as a :class:`LinearOperator`: a tensor becomes :class:`Dense`; an object needs
    ``in_shape`` and ``forward``."""
    if isinstance(A, LinearOperator):
        return A
    if isinstance(A, torch.Tensor):
        return Dense(A)
    if not callable(getattr(A, "forward", None)) or not hasattr(A, "in_shape"):
        raise ValueError(f"A must be a dense (m, D) tensor or an operator with in_shape, forward(x) "
                         f"and adjoint(v); got {type(A).__name__} without "
                         f"{'forward' if not callable(getattr(A, 'forward', None)) else 'in_shape'}")
    return _Wrapped(A)
