import pytest
import torch

from qgseg.models import SEGMENTERS, build_model, count_parameters, load_local_weights


@pytest.mark.parametrize("name", SEGMENTERS)
@pytest.mark.parametrize("dims", [2, 3])
def test_every_network_builds_and_runs(name, dims):
    size = (32, 32) if dims == 2 else (32, 32, 32)
    if name == "swin-unetr":
        size = (64,) * dims  # SwinUNETR downsamples 5 times; instance norm needs > 1 pixel at the bottom
    features = [12] if name == "swin-unetr" else [8, 16, 32, 64, 128]
    model = build_model(name, dims, in_channels=3, num_classes=4, features=features).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 4, *size)
    assert count_parameters(model) > 1000


def test_unknown_network():
    with pytest.raises(ValueError, match="unknown network"):
        build_model("vnet9000", 2, 1, 2)


def test_local_weights_skip_mismatched_layers(tmp_path):
    src = build_model("unet", 2, in_channels=3, num_classes=2, features=[8, 16, 32])
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = build_model("unet", 2, in_channels=3, num_classes=4, features=[8, 16, 32])
    skipped = load_local_weights(dst, tmp_path / "w.pt")
    assert skipped, "the output head has another shape and must be skipped"
    shared = [k for k in src.state_dict() if k not in skipped]
    assert all(torch.equal(src.state_dict()[k], dst.state_dict()[k]) for k in shared)
    with pytest.raises(FileNotFoundError):
        load_local_weights(dst, tmp_path / "missing.pt")
