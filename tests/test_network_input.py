"""One normalisation for training and inference (:func:`prepare_network_input`).

A 2D network trained on single slices (ACDC training slices, z-scored per slice) must see a
test volume's slices normalised the same way: per slice, not over the whole volume.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qgseg.data.case import Case
from qgseg.data.preprocess import TensorBank, normalize_image, prepare_network_input
from qgseg.evaluation.inference import ModelSpec, Segmenter
from qgseg.quality.predictor import QualityPredictor
from qgseg.quality.scoring import QualityScorer

SIZE = (16, 20)


def _volume(slice_first: bool = True) -> Case:
    """Slices with very different intensity ranges (as MR slices near the apex and the base)."""
    rng = np.random.default_rng(0)
    slices = [rng.random(SIZE).astype(np.float32) * scale + offset
              for scale, offset in [(1.0, 0.0), (500.0, 1000.0), (0.01, -3.0), (80.0, 20.0)]]
    labels = [rng.integers(0, 3, SIZE) for _ in slices]
    if slice_first:  # HDF5 (C, D, H, W)
        return Case("vol", np.stack(slices)[None], np.stack(labels), meta={"dtype": "float32"})
    return Case("nii", np.stack(slices, -1)[None], np.stack(labels, -1),  # NIfTI (C, X, Y, Z)
                meta={"dtype": "float32", "format": ".nii.gz"})


def _slices_as_2d_cases(vol: Case, axis: int) -> list[Case]:
    n = vol.image.shape[1 + axis]
    return [Case(f"s{k}", np.ascontiguousarray(np.take(vol.image, k, axis=1 + axis)),
                 np.ascontiguousarray(np.take(vol.label, k, axis=axis)), meta=dict(vol.meta, format=".h5"))
            for k in range(n)]


def _scorer(normalize: str) -> QualityScorer:
    model = QualityPredictor(2, 1, 2, depth=10, width=[4, 4, 8, 8])
    meta = {"classes": ["bg", "a", "b"], "image_size": list(SIZE), "normalize": normalize, "spatial_dims": 2}
    return QualityScorer(model, meta)


def _segmenter(normalize: str) -> Segmenter:
    spec = ModelSpec(name="unet", spatial_dims=2, in_channels=1, classes=["bg", "a", "b"], image_size=list(SIZE),
                     normalize=normalize, features=[4, 8, 16])
    return Segmenter(spec.build().eval(), spec)


@pytest.mark.parametrize("normalize", ["zscore", "auto", "unit", "none"])
@pytest.mark.parametrize("slice_first", [True, False])
def test_volume_slices_are_prepared_identically_everywhere(normalize, slice_first):
    vol = _volume(slice_first)
    axis = 0 if slice_first else 2
    separate = _slices_as_2d_cases(vol, axis)

    bank = TensorBank.from_cases([vol], SIZE, normalize, resize=False, model_dims=2)
    bank_2d = TensorBank.from_cases(separate, SIZE, normalize, resize=False, model_dims=2)
    seg_x, sliced = _segmenter(normalize).prepare(vol)
    q_x = _scorer(normalize).prepare_image(vol)
    assert sliced and seg_x.shape == q_x.shape == (4, 1, *SIZE) and len(bank) == len(bank_2d) == 4
    for k, case in enumerate(separate):
        expected = torch.from_numpy(normalize_image(case.image, "unit" if normalize == "unit" else
                                                    ("none" if normalize == "none" else "zscore")))
        torch.testing.assert_close(bank.images[k], expected, rtol=0, atol=0)
        torch.testing.assert_close(bank_2d.images[k], expected, rtol=0, atol=0)
        torch.testing.assert_close(seg_x[k], expected, rtol=0, atol=0)
        torch.testing.assert_close(q_x[k], expected, rtol=0, atol=0)
        torch.testing.assert_close(bank.labels[k], bank_2d.labels[k], rtol=0, atol=0)
        assert seg_x.dtype == q_x.dtype == bank.images[k].dtype == torch.float32


def test_zscore_of_a_sliced_volume_is_per_slice():
    vol = _volume()
    x, y, sliced = prepare_network_input(vol, "zscore", 2)
    assert sliced and x.dtype == np.float32 and x.shape == (4, 1, *SIZE) and y.shape == (4, *SIZE)
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 1.0, atol=1e-3)


def test_whole_case_normalisation_for_2d_and_3d_networks_is_unchanged():
    vol = _volume()
    x, y, sliced = prepare_network_input(vol, "zscore", 3)  # 3D -> 3D: over the whole volume
    assert not sliced and x.shape == (1, 1, 4, *SIZE) and y.shape == (1, 4, *SIZE)
    np.testing.assert_array_equal(x[0], normalize_image(vol.image, "zscore"))
    img = Case("rgb", (np.random.default_rng(1).random((3, *SIZE)) * 255).astype(np.float32), meta={"dtype": "uint8"})
    x, y, sliced = prepare_network_input(img, "auto", 2)  # 2D -> 2D, 8-bit: unit
    assert not sliced and y is None
    np.testing.assert_array_equal(x[0], img.image / 255.0)
