import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from avg_rt.metrics import frame_metrics, psnr, sharp_diff, ssim, to_unit


def test_psnr_known_values():
    y = torch.zeros(3, 8, 8)
    assert psnr(y + 0.1, y).item() == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    assert psnr(y, y).item() == math.inf


def test_psnr_matches_skimage_and_is_batched():
    rng = np.random.default_rng(1)
    y = rng.random((4, 2, 3, 20, 24))
    p = np.clip(y + rng.normal(0, 0.05, y.shape), 0, 1)
    ours = psnr(torch.tensor(p), torch.tensor(y))
    assert ours.shape == (4, 2)
    ref = peak_signal_noise_ratio(y[2, 1], p[2, 1], data_range=1)
    assert ours[2, 1].item() == pytest.approx(ref, abs=1e-4)


def test_tf_convention_is_6_02_db_lower():
    y = torch.rand(3, 16, 16)
    p = (y + 0.05).clamp(0, 1)
    tf_style = 10 * torch.log10(1 / (((2 * p - 1) - (2 * y - 1)) ** 2).mean())  # [-1, 1], peak 1
    assert (psnr(p, y) - tf_style).item() == pytest.approx(20 * math.log10(2), abs=1e-4)


def test_ssim_matches_skimage_gaussian():
    rng = np.random.default_rng(2)
    y = rng.random((3, 30, 40)).astype(np.float32)
    p = np.clip(y + rng.normal(0, 0.1, y.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(
        y,
        p,
        channel_axis=0,
        data_range=1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    ours = ssim(torch.tensor(p)[None], torch.tensor(y)[None])
    assert ours.shape == (1,)
    assert ours.item() == pytest.approx(ref, abs=1e-5)
    assert ssim(torch.tensor(y), torch.tensor(y)).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8))


def test_sharp_diff_known_value():
    y = torch.zeros(1, 3, 3)
    y[0, 0, 1] = 1.0
    p = torch.zeros(1, 3, 3)
    # g_Y on the 2x2 grid: |dx| is 1 at (0,0) and (0,1), |dy| is 1 at (0,1), so
    # g_Y = [[1, 2], [0, 0]] with mean 0.75; g_G = 0.
    assert sharp_diff(p, y).item() == pytest.approx(10 * math.log10(1 / 0.75))
    assert sharp_diff(y, y).item() == math.inf


def test_frame_metrics_model_range():
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    m = frame_metrics(y, y)
    assert set(m) == {"psnr", "sharp_diff", "ssim"} and m["ssim"].shape == (2,)
    assert to_unit(torch.tensor([-1.0, 1.0])).tolist() == [0.0, 1.0]
    assert "ssim" not in frame_metrics(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_masked_metrics_only_see_the_mask():
    from avg_rt.metrics import moving_mask

    y = torch.rand(2, 3, 24, 24)
    p = y.clone()
    p[:, :, :12] = (p[:, :, :12] + 0.2).clamp(0, 1)  # errors only in the top half
    top = torch.zeros(2, 24, 24, dtype=torch.bool)
    top[:, :12] = True
    bottom = ~top
    bottom[:, 12] = False  # row 12's SSIM window and neighbour differences reach the top half
    assert torch.isinf(psnr(p, y, ~top)).all()  # the bottom half is exact
    whole, masked = psnr(p, y), psnr(p, y, top)
    assert torch.allclose(masked, whole - 10 * torch.log10(torch.tensor(2.0)), atol=1e-4)
    assert torch.isinf(sharp_diff(p, y, bottom)).all()
    assert torch.isfinite(sharp_diff(p, y, top)).all()
    assert (ssim(p, y, top) < 0.99).all()
    last = y.clone()
    last[:, 0, 3, 4] += 0.5
    moving = moving_mask(last, y)
    assert moving.shape == (2, 24, 24) and moving.sum().item() == 2 and moving[0, 3, 4]
    assert torch.isnan(psnr(p, y, torch.zeros_like(top))).all()


def test_frame_metrics_with_masks_equal_the_single_metrics():
    g = torch.Generator().manual_seed(0)
    y, p = torch.rand(2, 3, 3, 20, 24, generator=g), torch.rand(2, 3, 3, 20, 24, generator=g)
    mask = torch.rand(2, 3, 20, 24, generator=g) > 0.7
    m = frame_metrics(p * 2 - 1, y * 2 - 1, {"": None, "_moving": mask})
    assert set(m) == {
        "psnr",
        "sharp_diff",
        "ssim",
        "psnr_moving",
        "sharp_diff_moving",
        "ssim_moving",
    }
    for name, fn in (("psnr", psnr), ("sharp_diff", sharp_diff), ("ssim", ssim)):
        torch.testing.assert_close(m[name], fn(p, y))
        torch.testing.assert_close(m[f"{name}_moving"], fn(p, y, mask))
        assert not torch.allclose(m[name], m[f"{name}_moving"])


def test_symmetric_moving_mask_counts_what_the_prediction_damages():
    """A sprite moves right by 2 pixels; the prediction moves it correctly but also paints a
    blotch on the still background. The target-only mask never sees the blotch (it keeps the
    pixels where copying is wrong); the symmetric mask does, and the PSNR over it drops."""
    from avg_rt.data.clips import round_to_8bit
    from avg_rt.metrics import moving_mask

    last = torch.full((1, 3, 16, 16), -1.0)
    last[..., 4:8, 2:6] = 1.0  # sprite at columns 2..5
    truth = torch.full_like(last, -1.0)
    truth[..., 4:8, 4:8] = 1.0  # moved to columns 4..7
    pred = truth.clone()
    pred[..., 12:14, 10:12] = 0.0  # a blotch where nothing moves
    pred = round_to_8bit(pred + 1e-3)  # sub-level noise everywhere rounds away
    old, sym = moving_mask(last, truth), moving_mask(last, truth, pred)
    assert old.sum().item() == 4 * 4  # columns 2, 3 (left behind) and 6, 7 (entered)
    assert sym.sum().item() == 4 * 4 + 2 * 2 and sym[0, 12:14, 10:12].all()
    assert torch.isinf(psnr(pred, truth, old)).all()  # the old mask calls this perfect
    assert torch.isfinite(psnr(pred, truth, sym)).all()
    # Copying the last frame changes nothing itself: both masks agree for it.
    assert torch.equal(moving_mask(last, truth, last), old)
