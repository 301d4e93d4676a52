"""Mask-centred crops of the quality predictor (qgseg.quality.roi and QualityPredictor(roi_size=...))."""
from __future__ import annotations

import pytest
import torch

from qgseg.quality.predictor import QualityPredictor, agreement_dice
from qgseg.quality.roi import mask_roi_theta, roi_crop, roi_uncrop


def _box_mask(shape, *slices) -> torch.Tensor:
    m = torch.zeros(1, 1, *shape)
    m[(0, 0, *slices)] = 1
    return m


def test_box_covers_mask_with_margin_and_zooms_in():
    m = _box_mask((64, 64), slice(24, 34), slice(20, 40))  # 10 x 20 px, away from the borders
    theta = mask_roi_theta(m, margin=0.5, min_fraction=0.25)
    # square box: side = 20 px * (1 + 2 * 0.5) = 40 px of 64 -> half-size 0.625 on both axes
    torch.testing.assert_close(theta[0, :, :2], torch.eye(2) * 0.625)
    # centre (x first): columns 20..40 -> 30 px -> 2 * 30 / 64 - 1; rows 24..34 -> 29 px
    torch.testing.assert_close(theta[0, :, 2], torch.tensor([2 * 30 / 64 - 1, 2 * 29 / 64 - 1]))
    crop = roi_crop(m, theta, [32, 32])  # 40 px -> 32 px: area scales by (32/40)^2
    assert crop.sum().item() == pytest.approx(200 * (32 / 40) ** 2, rel=0.02)
    # the whole mask is inside the crop: it comes back exactly
    back = roi_uncrop(crop, theta, [64, 64])
    torch.testing.assert_close((back > 0.5).float(), m)


def test_box_limits_empty_masks_and_borders():
    # empty mask -> the whole image
    theta = mask_roi_theta(torch.zeros(2, 3, 16, 16))
    torch.testing.assert_close(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3))
    # a one-pixel mask -> the smallest box (min_fraction), not an infinite zoom
    tiny = _box_mask((64, 64), slice(30, 31), slice(30, 31))
    assert mask_roi_theta(tiny, min_fraction=0.25)[0, 0, 0].item() == pytest.approx(0.25)
    # a mask in the corner -> the box is shifted to stay inside the image
    corner = _box_mask((64, 64), slice(0, 8), slice(56, 64))
    th = mask_roi_theta(corner, margin=1.0, min_fraction=0.1)
    half, cx, cy = th[0, 0, 0], th[0, 0, 2], th[0, 1, 2]
    assert (cx + half).item() <= 1 + 1e-6 and (cy - half).item() >= -1 - 1e-6
    assert roi_crop(corner, th, [16, 16]).sum() > 0
    # a mask larger than the image after the margin -> the whole image
    big = _box_mask((32, 32), slice(2, 30), slice(2, 30))
    torch.testing.assert_close(mask_roi_theta(big)[0, :, :2], torch.eye(2))
    # several classes: the box covers their union
    two = torch.zeros(1, 2, 64, 64)
    two[0, 0, 10:14, 10:14] = 1
    two[0, 1, 50:54, 50:54] = 1
    th = mask_roi_theta(two, margin=0.0, min_fraction=0.1)
    assert th[0, 0, 0].item() == pytest.approx(44 / 64)
    with pytest.raises(ValueError, match="min_fraction"):
        mask_roi_theta(two, min_fraction=0.0)


def test_3d_box():
    m = torch.zeros(1, 1, 16, 32, 32)
    m[0, 0, 6:10, 12:20, 8:16] = 1  # extents 4, 8, 8 voxels
    theta = mask_roi_theta(m, margin=0.5, min_fraction=0.1)
    assert theta.shape == (1, 3, 4)
    # largest extent: 4/16 = 8/32 = a quarter of the side -> box side = a quarter * (1 + 2 * 0.5) = half
    torch.testing.assert_close(torch.diagonal(theta[0, :, :3]), torch.full((3,), 0.5))
    crop = roi_crop(m, theta, [8, 16, 16])
    assert crop.shape == (1, 1, 8, 16, 16)
    torch.testing.assert_close((roi_uncrop(crop, theta, [16, 32, 32]) > 0.5).float(), m)


def test_predictor_with_roi_sees_the_crop_and_stays_differentiable():
    torch.manual_seed(0)
    model = QualityPredictor(2, 1, 2, depth=10, width=8, truth_decoder=True, roi_size=[32, 32], no_max_pool=True)
    model.eval()
    image = torch.randn(3, 1, 96, 80)  # any input size: the network sees 32 x 32 crops
    masks = torch.zeros(3, 2, 96, 80)
    masks[:, 0, 40:50, 30:45] = 0.9
    masks[:, 1, 45:55, 35:40] = 0.7
    masks.requires_grad_(True)
    dice, truth_logits = model(image, masks, return_truth=True)
    assert dice.shape == (3, 2) and truth_logits.shape == (3, 2, 32, 32)
    dice.sum().backward()
    assert masks.grad is not None and masks.grad.abs().sum() > 0  # QAR's gradient reaches the mask values
    with torch.no_grad():
        # the same result as feeding the crop by hand to a whole-image model with the same weights
        whole = QualityPredictor.from_config({**model.config(), "roi_size": None})
        whole.load_state_dict(model.state_dict())
        whole.eval()
        crop_img, crop_masks = model.input_view(image, masks), model.input_view(masks, masks)
        torch.testing.assert_close(model(image, masks), whole(crop_img, crop_masks))
        # agreement readout = Dice of the cropped mask with the decoder's truth in the crop frame
        model.readout = "agreement"
        torch.testing.assert_close(model(image, masks), agreement_dice(crop_masks, truth_logits))
        # truth maps go back to the input frame
        assert model.source_view(torch.sigmoid(truth_logits), masks).shape == (3, 2, 96, 80)
    rebuilt = QualityPredictor.from_config(model.config())
    assert rebuilt.roi_size == [32, 32] and rebuilt.roi_margin == model.roi_margin
    with pytest.raises(ValueError, match="roi_size"):
        QualityPredictor(2, 1, 1, roi_size=[32])


def test_predictor_with_roi_in_3d():
    model = QualityPredictor(3, 1, 2, depth=10, width=4, truth_decoder=True, roi_size=[8, 16, 16], no_max_pool=True)
    model.eval()
    masks = torch.zeros(2, 2, 16, 32, 32)
    masks[0, 0, 4:9, 10:20, 12:18] = 1
    masks[1, 1, 2:4, 2:6, 2:6] = 1
    dice, truth_logits = model(torch.randn(2, 1, 16, 32, 32), masks, return_truth=True)
    assert dice.shape == (2, 2) and truth_logits.shape == (2, 2, 8, 16, 16)
    assert model.source_view(truth_logits, masks, fill=-20.0).shape == (2, 2, 16, 32, 32)
