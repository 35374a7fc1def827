import pytest

from kerascnn.errors import KerasCNNError
from kerascnn.models import build_lenet
from kerascnn.visualization import first_conv_layer, kernel_images, spatial_layers, visualize

PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.core  # also run under jax and torch (tests/test_backend.py)


def _image(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG
    return matplotlib.image.imread(path)


def test_conv1_kernels_maps_and_curves(trained_run, tmp_path):
    r = visualize(trained_run.model_path, "conv1", index=3, output=tmp_path)
    names = [p.name for p in r.paths]
    assert names == ["lenet.conv1.kernels.png", "lenet.conv1.maps.3.png", "lenet.curves.png"]
    for path in r.paths:
        img = _image(path)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.05, f"{path.name} is blank"


def test_newest_model_is_the_default(trained_run, tmp_path):
    r = visualize(None, "pool2", models_dir=trained_run.model_path.parent, output=tmp_path)
    assert r.model_path == trained_run.model_path
    assert [p.name for p in r.paths][0] == "lenet.pool2.maps.0.png"  # a pool layer has no kernels


def test_unknown_layer_lists_valid_ones(trained_run):
    with pytest.raises(KerasCNNError, match="valid layers: conv1, pool1, conv2, pool2"):
        visualize(trained_run.model_path, "fc1")


def test_index_out_of_range(trained_run):
    with pytest.raises(KerasCNNError, match="--index must be between 0 and 359"):
        visualize(trained_run.model_path, "conv1", index=360)


def test_kernel_images_gray_and_rgb():
    gray = kernel_images(build_lenet(kernel=7).get_layer("conv2"))
    assert gray.shape == (16, 6, 7, 7)
    rgb = kernel_images(build_lenet(input_shape=(32, 32, 3)).get_layer("conv1"))
    assert rgb.shape == (6, 1, 5, 5, 3)
    weights = build_lenet(input_shape=(32, 32, 3)).get_layer("conv1").get_weights()[0]
    assert spatial_layers(build_lenet()) == ["conv1", "pool1", "conv2", "pool2"]
    assert weights.shape == (5, 5, 3, 6)


def test_the_default_layer_is_the_first_convolution(trained_run, tmp_path):
    from kerascnn.models import build_model

    assert first_conv_layer(build_lenet()) == "conv1"
    assert first_conv_layer(build_model("vgg11", input_shape=(32, 32, 1), num_classes=3, width=0.125,
                                        dense_units=8)) == "block1_conv1"
    assert first_conv_layer(build_model("resnet18", input_shape=(32, 32, 1), num_classes=3,
                                        width=0.125)) == "conv1_conv"
    r = visualize(trained_run.model_path, output=tmp_path)
    assert r.layer == "conv1" and r.paths[0].name == "lenet.conv1.kernels.png"


def test_checkpoints_from_another_folder(trained_run, tmp_path, monkeypatch):
    """Must show: visualize works on lenet.best.keras and lenet.last.keras from another folder."""
    monkeypatch.chdir(tmp_path)
    for kind in ("best", "last"):
        model = trained_run.model_path.with_name(f"lenet.{kind}.keras")
        r = visualize(model, "conv2", index=1, output=tmp_path / "pictures")
        assert [p.name for p in r.paths] == [f"lenet.{kind}.conv2.kernels.png", f"lenet.{kind}.conv2.maps.1.png",
                                             f"lenet.{kind}.curves.png"]
