"""Known defects applied to real images, to learn what each metric sees.

Each function takes uint8 images (N, C, H, W) and returns a uint8 set of the same count and
shape, with a ``torch.Generator`` for anything random. :func:`corruption_suite` builds the table
the report and the tests score: held-out images as they are, and the same count with one defect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Total variation per image: the mean absolute difference of vertically neighbouring pixels
    in [0, 1] plus that of horizontally neighbouring ones. Above 0.25 for 3.2% of the real
    Fashion-MNIST test images and for every image speckled by :func:`speckle`."""
    x = images.double() / 255
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


SPECKLE_TV = 0.25  # an image with total variation above this counts as speckled


def speckled_share(images: torch.Tensor) -> float:
    """The share of images whose :func:`total_variation` exceeds ``SPECKLE_TV``."""
    return float((total_variation(images) > SPECKLE_TV).double().mean())


def speckle(images: torch.Tensor, share: float, generator: torch.Generator,
            density: float = 0.15) -> torch.Tensor:
    """Salt-and-pepper speckle on a random ``share`` of the images: each of their pixels, with
    probability ``density``, set to black or white."""
    x = images.clone()
    n = round(share * len(x))
    chosen = torch.randperm(len(x), generator=generator)[:n]
    hit = torch.rand((n, 1, *x.shape[2:]), generator=generator) < density
    salt = (torch.rand((n, 1, *x.shape[2:]), generator=generator) < 0.5).to(torch.uint8) * 255
    x[chosen] = torch.where(hit, salt, x[chosen])
    return x


def blur(images: torch.Tensor, sigma: float = 0.6) -> torch.Tensor:
    """A light Gaussian blur (3x3 kernel, standard deviation ``sigma`` pixels)."""
    r = torch.arange(3, dtype=torch.float64) - 1
    g = torch.exp(-(r**2) / (2 * sigma**2))
    k = (g[:, None] * g[None, :]) / g.sum() ** 2
    c = images.shape[1]
    x = F.pad(images.double(), [1] * 4, mode="replicate")
    return F.conv2d(x, k.expand(c, 1, 3, 3), groups=c).round().clamp(0, 255).to(torch.uint8)


def contrast(images: torch.Tensor, factor: float = 0.7) -> torch.Tensor:
    """Contrast scaled by ``factor`` about mid-grey."""
    return ((images.double() - 127.5) * factor + 127.5).round().clamp(0, 255).to(torch.uint8)


def drop_classes(images: torch.Tensor, labels: torch.Tensor, classes, generator) -> torch.Tensor:
    """The same number of images drawn (with repeats if needed) from the classes not listed:
    a model that misses modes."""
    keep = torch.nonzero(~torch.isin(labels, torch.as_tensor(list(classes)))).flatten()
    pick = keep[torch.randperm(len(keep), generator=generator)]
    reps = -(-len(images) // len(pick))
    return images[pick.repeat(reps)[: len(images)]]


def training_copies(train: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` images copied from the training set: a model that memorised its data."""
    return train[torch.randperm(len(train), generator=generator)[:n]]


def n_missing(n_classes: int) -> int:
    """How many classes the missing-classes defect drops: about 30% of them (3 of 10), at least
    one, always leaving one; 0 when there is a single class."""
    return 0 if n_classes < 2 else min(n_classes - 1, max(1, round(0.3 * n_classes)))


def corruption_suite(heldout: torch.Tensor, labels: torch.Tensor, train: torch.Tensor,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """Name -> image set: held-out images as they are and with one known defect each (same count).

    ``speckle 30%``: salt-and-pepper on 30% of them; ``blur``: sigma 0.6 px; ``contrast 0.7``;
    ``k classes missing`` (k = :func:`n_missing`, 3 of 10): drawn from the other classes only
    (the first k class ids; left out for a single class); ``training copies``: training images
    instead (memorisation).
    """
    g = torch.Generator().manual_seed(seed)
    present = torch.unique(labels)
    k = n_missing(len(present))
    suite = {
        "held-out": heldout,
        "speckle 30%": speckle(heldout, 0.3, g),
        "blur": blur(heldout),
        "contrast 0.7": contrast(heldout),
    }
    if k:
        name = f"{k} class{'es' if k > 1 else ''} missing"
        suite[name] = drop_classes(heldout, labels, present[:k].tolist(), g)
    suite["training copies"] = training_copies(train, len(heldout), g)
    return suite
