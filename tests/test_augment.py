import torch

from qgseg.data.augment import intensity_augment, spatial_augment


def test_spatial_augment_keeps_image_and_label_aligned():
    gen = torch.Generator().manual_seed(0)
    label = torch.zeros(6, 32, 32, dtype=torch.long)
    label[:, 8:20, 10:24] = 1
    image = label[:, None].float() * 2.0  # image == 2 * label: alignment is checkable
    img, lab = spatial_augment(image, label, gen)
    assert img.shape == image.shape and lab.shape == label.shape
    assert set(lab.unique().tolist()) <= {0, 1}
    agree = ((img[:, 0] > 1.0).long() == lab).float().mean()
    assert agree > 0.97


def test_augment_is_seeded_and_3d_works():
    x = torch.rand(2, 1, 6, 16, 16)
    y = (x[:, 0] > 0.5).long()
    a = spatial_augment(x, y, torch.Generator().manual_seed(3))
    b = spatial_augment(x, y, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    out = intensity_augment(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_many_tensors_share_one_transform():
    from qgseg.data.augment import spatial_augment_many

    gen = torch.Generator().manual_seed(2)
    hard = torch.zeros(8, 2, 32, 32)
    hard[:, 0, 6:18, 8:20] = 1
    hard[:, 1, 20:28, 4:30] = 1
    image = hard.sum(1, keepdim=True) * 3.0
    soft = hard * 0.5
    img, h, s = spatial_augment_many([image, hard, soft], ["image", "hard", "soft"], gen)
    assert set(h.unique().tolist()) <= {0.0, 1.0}, "hard masks stay hard"
    assert ((img[:, 0] > 1.5) == (h.sum(1) > 0.5)).float().mean() > 0.97
    assert (s <= 0.5 + 1e-6).all() and ((s > 0.25) == (h > 0.5)).float().mean() > 0.97
    out = spatial_augment_many([image, None], ["image", "soft"], gen)
    assert out[1] is None
