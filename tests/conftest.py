import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from scoresde import VESDE, VPSDE, SubVPSDE  # noqa: E402

# The paper's settings (Song et al. 2021, Appendix C): VE sigma 0.01..50, VP / sub-VP beta 0.1..20.
PAPER_SDES = {
    "ve": lambda: VESDE(sigma_min=0.01, sigma_max=50.0, N=1000),
    "vp": lambda: VPSDE(beta_min=0.1, beta_max=20.0, N=1000),
    "subvp": lambda: SubVPSDE(beta_min=0.1, beta_max=20.0, N=1000),
}


@pytest.fixture(params=list(PAPER_SDES))
def sde(request):
    return PAPER_SDES[request.param]()


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield
