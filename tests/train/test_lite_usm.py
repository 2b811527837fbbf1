"""The lite method's ``gt_usm``: Real-ESRGAN's unsharp mask of the pixel-loss targets, on degraded samples only."""

import numpy as np
import pytest
import torch

from tests.helpers.paths import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "authors_parity" / "usm_basicsr.npz"


def test_the_unsharp_mask_equals_basicsr_usmsharp():
    from sr_cli.train.edges import usm_sharpen

    rec = np.load(FIXTURE)
    img = torch.from_numpy(rec["img"])
    assert np.abs(usm_sharpen(img).numpy() - rec["out"]).max() < 2e-6
    assert np.abs(usm_sharpen(img, weight=0.3).numpy() - rec["out_w03"]).max() < 2e-6
    assert np.abs(rec["out"] - rec["img"]).max() > 0.05  # the recording does sharpen


def test_degraded_samples_learn_the_sharpened_photo_and_clean_ones_the_photo(tmp_path):
    from sr_cli.train.config import resolve_config
    from sr_cli.train.edges import usm_sharpen
    from sr_cli.train.methods import build_method

    cfg = resolve_config("lite", None, data=["x"], output=str(tmp_path / "run"), gt_usm=0.5, lite_channels=[8, 8, 8],
                         lite_blocks=1)
    method = build_method(cfg, None)
    hq = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    clean = torch.tensor([True, False])
    target = method._pixel_target(hq, clean)
    assert torch.equal(target[0], hq[0])
    assert torch.equal(target[1], usm_sharpen(hq[1:])[0])
    assert not torch.equal(target[1], hq[1])
    lq = torch.nn.functional.avg_pool2d(hq, 4)
    with torch.no_grad():
        sharpened, _ = method.loss_terms(lq, hq, torch.tensor([False, False]))
        kept, _ = method.loss_terms(lq, hq, torch.tensor([True, True]))
        method.options.gt_usm = 0.0
        plain, _ = method.loss_terms(lq, hq, torch.tensor([False, False]))
    assert kept["l1"].item() == plain["l1"].item() != sharpened["l1"].item()
    with pytest.raises(Exception, match="gt_usm"):
        resolve_config("lite", None, data=["x"], output=str(tmp_path / "r2"), gt_usm=-1)
