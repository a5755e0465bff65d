"""Image-quality metrics of reconstructions (inpainting, colorization, inverse problems,
class-conditional samples): PSNR and SSIM against the ground truth, FID against a reference set."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(x: torch.Tensor, ref: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB for uint8 images (peak 255), over ``region``."""
    d = (x.double() - ref.double()) ** 2
    w = torch.ones_like(d) if region is None else region.double()
    mse = (d * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp(min=1)
    return 10 * torch.log10(255.0**2 / mse.clamp(min=1e-10))


def ssim(x: torch.Tensor, ref: torch.Tensor, window: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image of uint8 images, mean over pixels.

    A Gaussian window (``window`` x ``window``, ``sigma``; 5 and 1.0 suit 8x8 images rather than
    the usual 11 and 1.5), reflect padding, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2.
    """
    C = x.shape[1]
    r = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(C, 1, window, window)

    def blur(z):
        return F.conv2d(F.pad(z, [window // 2] * 4, mode="reflect"), kernel, groups=C)

    a, b = x.double(), ref.double()
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


class ReferenceFID:
    """FID of image sets against one reference set (uint8) in one feature extractor.

    The extractor is built (unless given) and the reference's features extracted once, here, for
    every set scored after; each value equals ``metrics.compute_fid_kid(images, reference,
    extractor, seed=seed, kid_subset_size=max(2, n // 2))["fid"]`` (KID subsets of half the
    smaller set), NaN below 4 images. ``extractor``: the classifier checkpoint's path, or a
    ``metrics.FeatureSpace`` to share between references.
    """

    def __init__(self, reference: torch.Tensor, extractor):
        from scoresde.metrics import FeatureSpace

        self.space = extractor if isinstance(extractor, FeatureSpace) else FeatureSpace(extractor)
        self.reference, self.features = reference, self.space.features(reference)

    def __call__(self, images: torch.Tensor, seed: int) -> float:
        from scoresde.metrics import check_pair, fid_kid_from_features

        n = check_pair(images, self.reference)
        if n < 4:
            return float("nan")
        return fid_kid_from_features(self.space.features(images), self.features, max(2, n // 2),
                                     seed, self.space.num_threads)["fid"]
