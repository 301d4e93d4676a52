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


def test_gaussian_blur_matches_scipy_per_sample_sigma():
    import numpy as np
    from scipy import ndimage

    from qgseg.data.augment import gaussian_blur

    x = torch.rand(3, 2, 24, 20)
    sigma = torch.tensor([0.6, 1.0, 1.8])
    out = gaussian_blur(x, sigma)
    assert out.shape == x.shape
    for b in range(3):  # each sample with its own sigma; scipy truncates at 3 sigma of the largest one
        radius = int(np.ceil(3 * 1.8))
        ref = ndimage.gaussian_filter(x[b].numpy(), (0, float(sigma[b]), float(sigma[b])), mode="nearest",
                                      truncate=radius / float(sigma[b]))
        assert np.abs(out[b].numpy() - ref).max() < 1e-5
    const = torch.full((2, 1, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(const, torch.tensor([1.0, 2.0])), const)


def test_gaussian_blur_leaves_the_through_plane_axis_of_3d_stacks_alone():
    from qgseg.data.augment import gaussian_blur

    slices = torch.arange(5.0).view(1, 1, 5, 1, 1).expand(2, 1, 5, 12, 12).contiguous()
    assert torch.allclose(gaussian_blur(slices, torch.tensor([1.0, 2.0])), slices)
    x = torch.rand(1, 1, 4, 16, 16)
    assert gaussian_blur(x, torch.tensor([1.5])).std() < x.std()


def test_blur_and_colour_are_off_by_default_and_draw_nothing_then():
    from qgseg.data.augment import AugmentConfig

    x = torch.rand(4, 3, 16, 16)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = intensity_augment(x, g1)
    # other blur/colour settings with probability 0 must not change the draws (old runs reproduce)
    b = intensity_augment(x, g2, AugmentConfig(blur_sigma=[3.0, 4.0], color_gain=0.5))
    assert torch.equal(a, b) and torch.equal(g1.get_state(), g2.get_state())


def test_colour_gains_scale_each_channel():
    from qgseg.data.augment import AugmentConfig

    x = torch.rand(6, 3, 8, 8) + 0.1
    cfg = AugmentConfig(intensity_p=0.0, color_p=1.0, color_gain=0.2)
    out = intensity_augment(x, torch.Generator().manual_seed(0), cfg)
    ratio = out / x
    per_channel = ratio.flatten(2)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel), atol=1e-5)
    gains = per_channel[..., 0]
    assert ((gains >= 0.8 - 1e-6) & (gains <= 1.2 + 1e-6)).all()
    assert (gains.std(1) > 1e-4).all(), "the channels get different gains"


def test_blur_probability_one_smooths_every_sample():
    from qgseg.data.augment import AugmentConfig

    x = torch.rand(5, 1, 32, 32)
    cfg = AugmentConfig(intensity_p=0.0, blur_p=1.0, blur_sigma=[1.0, 2.0])
    out = intensity_augment(x, torch.Generator().manual_seed(0), cfg)
    def roughness(t: torch.Tensor) -> torch.Tensor:
        return (t[..., 1:] - t[..., :-1]).abs().mean((1, 2, 3))
    assert (roughness(out) < 0.5 * roughness(x)).all()
