import numpy as np
import pytest
import torch

from qgseg.data.case import Case
from qgseg.data.io import DataError
from qgseg.data.preprocess import TensorBank, as_slices, normalize_image
from qgseg.evaluation.inference import ModelSpec, Segmenter


def _spec(**kw):
    base = dict(name="unet", spatial_dims=2, in_channels=1, classes=["bg", "a", "b"], image_size=[32, 32],
                features=[8, 16, 32])
    base.update(kw)
    return ModelSpec(**base)


def test_volume_with_2d_model_is_predicted_slice_by_slice():
    spec = _spec()
    seg = Segmenter(spec.build().eval(), spec)
    vol = Case("v", np.random.rand(1, 5, 40, 36).astype(np.float32))  # (C, D, H, W) slice-first
    probs = seg.predict_proba(vol)
    assert probs.shape == (3, 5, 40, 36)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    nifti = Case("n", np.random.rand(1, 40, 36, 5).astype(np.float32), meta={"format": ".nii.gz"})
    assert seg.predict(nifti).shape == (40, 36, 5)  # sliced along Z, returned in X, Y, Z order


def test_slice_prediction_matches_2d_prediction():
    spec = _spec()
    seg = Segmenter(spec.build().eval(), spec)
    vol = np.random.rand(1, 3, 32, 32).astype(np.float32)
    p_vol = seg.predict_proba(Case("v", vol, meta={"dtype": "float32"}))
    spec_none = _spec(normalize="none")
    seg_none = Segmenter(seg.model, spec_none)
    for k in range(3):
        sl = normalize_image(vol[:, k], "zscore")  # a 2D network sees each slice z-scored on its own
        np.testing.assert_allclose(seg_none.predict_proba(Case("s", sl))[:, ...], p_vol[:, k], atol=1e-5)


def test_sliding_window_for_inputs_larger_than_training_size():
    spec = _spec(resize=False)
    seg = Segmenter(spec.build().eval(), spec, sw_batch_size=2)
    big = Case("big", np.random.rand(1, 70, 90).astype(np.float32))
    assert seg.predict(big).shape == (70, 90)


def test_channel_mismatch_is_reported(capsys):
    spec = _spec(in_channels=1)
    seg = Segmenter(spec.build().eval(), spec)
    with pytest.raises(DataError, match="rgb.png: image has 3 channel\\(s\\), the segmentation model expects 1"):
        seg.predict(Case("rgb", np.random.rand(3, 32, 32).astype(np.float32), meta={"image_paths": ["rgb.png"]}))
    # a grey image for an RGB model is repeated to 3 channels, with a warning naming it (as in training)
    spec = _spec(in_channels=3)
    seg = Segmenter(spec.build().eval(), spec)
    assert seg.predict(Case("gray", np.random.rand(1, 32, 32).astype(np.float32))).shape == (32, 32)
    assert "gray: grey image converted to RGB" in capsys.readouterr().err


def test_tensor_bank_resizes_and_crops():
    cases = [Case(f"c{i}", np.random.rand(1, 20 + i, 30).astype(np.float32),
                  np.random.randint(0, 2, (20 + i, 30))) for i in range(3)]
    bank = TensorBank.from_cases(cases, [16, 16], "zscore", resize=True, model_dims=2)
    x, y = bank.batch(torch.tensor([0, 2]), [16, 16], torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 16, 16) and y.shape == (2, 16, 16)
    crop = TensorBank.from_cases(cases, [24, 24], "zscore", resize=False, model_dims=2)
    x, y = crop.batch(torch.tensor([0, 1]), [24, 24], torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 24, 24) and y.shape == (2, 24, 24)  # padded in H, cropped in W
    vol = Case("v", np.random.rand(1, 4, 16, 16).astype(np.float32), np.zeros((4, 16, 16), int))
    assert len(TensorBank.from_cases([vol], [16, 16], "none", True, 2)) == 4
    img, lab, sliced = as_slices(vol, 2)
    assert sliced and img.shape == (4, 1, 16, 16) and lab.shape == (4, 16, 16)


def test_acdc_volume_predicted_and_scored_in_3d(shared_data):
    from conftest import require
    from qgseg.data.detect import open_dataset
    from qgseg.evaluation.metrics import case_metrics

    ds = open_dataset(require(shared_data / "ACDC"))
    vol = ds.load(ds.splits["test"][0])
    assert vol.spatial_dims == 3 and vol.spacing is None
    spec = _spec(classes=ds.classes, image_size=[64, 64])
    pred = Segmenter(spec.build().eval(), spec).predict(vol)
    assert pred.shape == vol.label.shape
    metrics = case_metrics(pred, vol.label, len(ds.classes), vol.spacing, ds.classes)
    assert set(metrics) == {"right_ventricle", "myocardium", "left_ventricle"}
