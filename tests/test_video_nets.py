"""The Keras video networks (benchmark/backbones/r2plus1d.py, i3d.py) and their Kinetics checkpoint
conversion (kinetics.py), at tiny sizes: shapes and parameter counts against the PyTorch / TensorFlow
originals, PyTorch's padding arithmetic, conversion round trips through the command, and loads that
must fail whole."""

from __future__ import annotations

import numpy as np
import pytest

from mbr_bench.benchmark.backbones.i3d import build_i3d
from mbr_bench.benchmark.backbones.kinetics import load_weights_file, main
from mbr_bench.benchmark.backbones.r2plus1d import KINETICS_MEAN, KINETICS_STD, build_r2plus1d_18
from mbr_bench.core.errors import WeightsError

SIZE = 32
TORCHVISION_R2PLUS1D_18_PARAMS = 31_505_325  # torchvision's documented count, with the 400-way fc
SCOPE = "RGB/inception_i3d/"


@pytest.fixture(scope="module")
def r2plus1d():
    return build_r2plus1d_18(SIZE, clip_length=None)


@pytest.fixture(scope="module")
def i3d():
    return build_i3d(SIZE, clip_length=None)


def _clip(frames: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (batch, frames, SIZE, SIZE, 3)).astype(np.float32)


def _trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _weights(model) -> list[np.ndarray]:
    return [w.numpy().copy() for w in model.weights]


# --- shapes and sizes -------------------------------------------------------------------------

@pytest.mark.parametrize("frames", [1, 4, 8])
def test_output_shapes_any_clip_length(r2plus1d, i3d, frames):
    assert np.asarray(r2plus1d(_clip(frames))).shape == (2, 512)
    assert np.asarray(i3d(_clip(frames))).shape == (2, 1024)


@pytest.mark.parametrize("builder, dim", [(build_r2plus1d_18, 512), (build_i3d, 1024)])
def test_fixed_clip_length(builder, dim):
    model = builder(SIZE, clip_length=4)
    assert model.input_shape == (None, 4, SIZE, SIZE, 3)
    out = model.predict(_clip(4), verbose=0)
    assert out.shape == (2, dim) and np.isfinite(out).all()


def test_r2plus1d_parameters_match_torchvision(r2plus1d):
    # torchvision counts parameters (conv weights, BN weight and bias, fc); Keras adds BN moving statistics.
    assert _trainable(r2plus1d) == TORCHVISION_R2PLUS1D_18_PARAMS - (512 * 400 + 400)
    bn_channels = sum(layer.weights[0].shape[0] for layer in r2plus1d.layers
                      if type(layer).__name__ == "BatchNormalization")
    assert r2plus1d.count_params() == _trainable(r2plus1d) + 2 * bn_channels
    expected = {  # torchvision: midplanes = (in * planes * 27) // (in * 9 + 3 * planes), per block
        "stem.0": (1, 7, 7, 3, 45), "stem.3": (3, 1, 1, 45, 64),
        "layer1.0.conv1.0.0": (1, 3, 3, 64, 144), "layer1.0.conv1.0.3": (3, 1, 1, 144, 64),
        "layer2.0.conv1.0.0": (1, 3, 3, 64, 230), "layer2.0.conv1.0.3": (3, 1, 1, 230, 128),
        "layer2.0.conv2.0.0": (1, 3, 3, 128, 230), "layer2.1.conv1.0.0": (1, 3, 3, 128, 288),
        "layer2.0.downsample.0": (1, 1, 1, 64, 128), "layer4.1.conv2.0.3": (3, 1, 1, 1152, 512),
    }
    for name, shape in expected.items():
        assert tuple(r2plus1d.get_layer(name).kernel.shape) == shape, name
    assert r2plus1d.get_layer("layer2.0.conv1.0.3").strides == (2, 1, 1)
    assert r2plus1d.get_layer("layer2.0.downsample.0").strides == (2, 2, 2)
    assert [w.name for w in r2plus1d.get_layer("layer1.0.conv1.0.1").weights] == \
        ["gamma", "beta", "moving_mean", "moving_variance"]
    with pytest.raises(ValueError):
        r2plus1d.get_layer("layer1.0.downsample.0")  # layer1 keeps 64 channels and stride 1: no downsample


# kinetics-i3d's i3d.py: Branch_0 1x1, Branch_1 1x1 -> 3x3x3, Branch_2 1x1 -> 3x3x3, Branch_3 pool -> 1x1
I3D_MIXED = [("Mixed_3b", 64, 96, 128, 16, 32, 32), ("Mixed_3c", 128, 128, 192, 32, 96, 64),
             ("Mixed_4b", 192, 96, 208, 16, 48, 64), ("Mixed_4c", 160, 112, 224, 24, 64, 64),
             ("Mixed_4d", 128, 128, 256, 24, 64, 64), ("Mixed_4e", 112, 144, 288, 32, 64, 64),
             ("Mixed_4f", 256, 160, 320, 32, 128, 128), ("Mixed_5b", 256, 160, 320, 32, 128, 128),
             ("Mixed_5c", 384, 192, 384, 48, 128, 128)]


def _i3d_units() -> dict[str, tuple[int, int, int, int, int]]:
    """Every Unit3D of the source: scope -> kernel (t, h, w, in, out), channels followed by hand."""
    units = {"Conv3d_1a_7x7": (7, 7, 7, 3, 64), "Conv3d_2b_1x1": (1, 1, 1, 64, 64),
             "Conv3d_2c_3x3": (3, 3, 3, 64, 192)}
    channels = 192
    for name, b0, b1a, b1b, b2a, b2b, b3 in I3D_MIXED:
        conv_2b = "Conv3d_0a_3x3" if name == "Mixed_5b" else "Conv3d_0b_3x3"
        units.update({f"{name}/Branch_0/Conv3d_0a_1x1": (1, 1, 1, channels, b0),
                      f"{name}/Branch_1/Conv3d_0a_1x1": (1, 1, 1, channels, b1a),
                      f"{name}/Branch_1/Conv3d_0b_3x3": (3, 3, 3, b1a, b1b),
                      f"{name}/Branch_2/Conv3d_0a_1x1": (1, 1, 1, channels, b2a),
                      f"{name}/Branch_2/{conv_2b}": (3, 3, 3, b2a, b2b),
                      f"{name}/Branch_3/Conv3d_0b_1x1": (1, 1, 1, channels, b3)})
        channels = b0 + b1b + b2b + b3
    assert channels == 1024
    return units


def test_i3d_layers_match_kinetics_i3d(i3d):
    units = _i3d_units()
    for scope, shape in units.items():
        name = scope.replace("/", ".")
        assert tuple(i3d.get_layer(f"{name}.conv_3d").kernel.shape) == shape, scope
        assert [w.name for w in i3d.get_layer(f"{name}.batch_norm").weights] == \
            ["beta", "moving_mean", "moving_variance"]  # Sonnet: no scale
    assert i3d.get_layer("Mixed_4b.Branch_1.Conv3d_0b_3x3.conv_3d").kernel.shape == (3, 3, 3, 96, 208)
    # conv kernels and BN offsets, nothing else trainable; the classifier is left out
    assert _trainable(i3d) == sum(int(np.prod(s)) + s[-1] for s in units.values())
    assert i3d.count_params() == _trainable(i3d) + 2 * sum(s[-1] for s in units.values())
    assert i3d.get_layer("Conv3d_1a_7x7.conv_3d").strides == (2, 2, 2)
    assert i3d.get_layer("MaxPool3d_4a_3x3").strides == (2, 2, 2)
    assert i3d.get_layer("MaxPool3d_2a_3x3").pool_size == (1, 3, 3)


def test_preprocessing_inside_the_models(r2plus1d, i3d):
    import keras

    grey = np.ones((1, 1, SIZE, SIZE, 3), np.float32) * np.asarray(KINETICS_MEAN, np.float32) * 255
    normalised = keras.Model(r2plus1d.input, r2plus1d.get_layer("normalize").output)(grey)
    np.testing.assert_allclose(np.asarray(normalised), 0, atol=1e-5)  # the Kinetics mean maps to 0
    white = np.full((1, 1, SIZE, SIZE, 3), 255, np.float32)
    np.testing.assert_allclose(np.asarray(keras.Model(r2plus1d.input, r2plus1d.get_layer("normalize").output)(white)),
                               np.broadcast_to((1 - np.asarray(KINETICS_MEAN)) / np.asarray(KINETICS_STD),
                                               white.shape), rtol=1e-5)
    scaled = keras.Model(i3d.input, i3d.get_layer("scale").output)(np.stack([white * 0, white])[:, 0])
    np.testing.assert_allclose(np.asarray(scaled)[:, 0, 0, 0, 0], [-1, 1], atol=1e-6)


def test_r2plus1d_stem_pads_like_pytorch(r2plus1d):
    """The strided 7x7 stem convolution pads 3 on each side (PyTorch), not TF SAME's 2 before, 3 after."""
    import keras

    clip = _clip(2, batch=1)
    stem = np.asarray(keras.Model(r2plus1d.input, r2plus1d.get_layer("stem.0").output)(clip))
    x = (clip / 255 - np.asarray(KINETICS_MEAN)) / np.asarray(KINETICS_STD)
    x = np.pad(x, ((0, 0), (0, 0), (3, 3), (3, 3), (0, 0)))
    kernel = r2plus1d.get_layer("stem.0").kernel.numpy()[0]  # (7, 7, 3, 45)
    out = SIZE // 2
    expected = np.zeros((1, 2, out, out, 45))
    for i in range(out):
        for j in range(out):
            patch = x[:, :, 2 * i:2 * i + 7, 2 * j:2 * j + 7, :]
            expected[:, :, i, j] = np.einsum("btijc,ijco->bto", patch, kernel)
    np.testing.assert_allclose(stem, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_r2plus1d_time_handling():
    """With every temporal kernel reduced to its centre tap, a clip of one repeated frame gives the same
    features at any length (strided time included); with full temporal kernels, the zero-padded ends
    make lengths differ."""
    model = build_r2plus1d_18(SIZE, clip_length=None)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":  # non-trivial statistics
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, channels).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2, channels).astype(np.float32))
    frame = _clip(1, batch=1, seed=2)
    full = [np.asarray(model(np.repeat(frame, t, axis=1))) for t in (4, 8)]
    assert np.abs(full[0] - full[1]).max() > 1e-3 * np.abs(full[0]).max()
    for layer in model.layers:
        if type(layer).__name__ == "Conv3D" and layer.kernel_size[0] == 3:
            kernel = layer.kernel.numpy()
            kernel[0] = kernel[2] = 0
            layer.kernel.assign(kernel)
    centre = [np.asarray(model(np.repeat(frame, t, axis=1))) for t in (1, 4, 8)]
    assert np.abs(centre[0]).max() > 0
    np.testing.assert_allclose(centre[1], centre[0], rtol=1e-4, atol=1e-5 * np.abs(centre[0]).max())
    np.testing.assert_allclose(centre[2], centre[0], rtol=1e-4, atol=1e-5 * np.abs(centre[0]).max())


# --- checkpoints -----------------------------------------------------------------------------------

def _fake_torchvision_state_dict(model, seed: int = 0) -> dict[str, np.ndarray]:
    """A state dict keyed and shaped like torchvision's r2plus1d_18, from the Keras layers' names."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv3D":
            t, h, w, cin, cout = layer.kernel.shape
            state[f"{layer.name}.weight"] = rng.normal(0, 0.05, (cout, cin, t, h, w)).astype(np.float32)
        elif kind == "BatchNormalization":
            c = layer.moving_mean.shape[0]
            state[f"{layer.name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
            state[f"{layer.name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
            state[f"{layer.name}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
            state[f"{layer.name}.running_var"] = rng.uniform(0.5, 2, c).astype(np.float32)
            state[f"{layer.name}.num_batches_tracked"] = np.array(1000, np.int64)
    state["fc.weight"] = rng.normal(0, 0.01, (400, 512)).astype(np.float32)
    state["fc.bias"] = np.zeros(400, np.float32)
    return state


def test_r2plus1d_conversion_round_trip(r2plus1d, tmp_path, capsys):
    state = _fake_torchvision_state_dict(r2plus1d)
    assert "layer3.0.downsample.1.running_var" in state and "stem.3.weight" in state
    source, out = tmp_path / "r2plus1d_18.npz", tmp_path / "converted.npz"
    np.savez(source, **state)
    assert main(["r2plus1d_18", str(source), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    load_weights_file(r2plus1d, out)
    conv = r2plus1d.get_layer("layer2.0.conv1.0.3")
    np.testing.assert_array_equal(conv.kernel.numpy(), state["layer2.0.conv1.0.3.weight"].transpose(2, 3, 4, 1, 0))
    stem = r2plus1d.get_layer("stem.0").kernel.numpy()
    assert stem[0, 1, 2, 0, 5] == state["stem.0.weight"][5, 0, 0, 1, 2]  # (out, in, t, h, w) -> (t, h, w, in, out)
    bn = r2plus1d.get_layer("layer4.1.conv2.1")
    np.testing.assert_array_equal(bn.gamma.numpy(), state["layer4.1.conv2.1.weight"])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["layer4.1.conv2.1.running_var"])


def test_failed_loads_change_nothing(r2plus1d, tmp_path):
    state = _fake_torchvision_state_dict(r2plus1d, seed=3)
    source, good = tmp_path / "sd.npz", tmp_path / "good.npz"
    np.savez(source, **state)
    assert main(["r2plus1d_18", str(source), str(good)]) == 0
    converted = dict(np.load(good))
    before = _weights(r2plus1d)

    missing = tmp_path / "missing.npz"
    np.savez(missing, **{k: v for k, v in converted.items() if k != "layer3.1.conv1.0.3/kernel"})
    with pytest.raises(WeightsError) as error:
        load_weights_file(r2plus1d, missing)
    message = str(error.value)
    assert "layer3.1.conv1.0.3/kernel" in message and str(missing) in message and "\n" not in message
    assert "python -m mbr_bench.benchmark.backbones.kinetics r2plus1d_18" in message

    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **{**converted, "layer4.0.conv1.1/beta": np.zeros(3, np.float32)})
    with pytest.raises(WeightsError, match=r"layer4\.0\.conv1\.1/beta has shape \(3,\)"):
        load_weights_file(r2plus1d, wrong)

    extra = tmp_path / "extra.npz"
    np.savez(extra, **{**converted, "fc/kernel": np.zeros((512, 400), np.float32)})
    with pytest.raises(WeightsError, match="fc/kernel"):
        load_weights_file(r2plus1d, extra)

    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(r2plus1d)))


def test_keras_weights_files(tmp_path):
    small = build_r2plus1d_18(SIZE, clip_length=4)
    other = build_i3d(SIZE, clip_length=4)
    saved = tmp_path / "r2plus1d.weights.h5"
    small.save_weights(saved)
    fresh = build_r2plus1d_18(SIZE, clip_length=None)
    load_weights_file(fresh, saved)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(small.weights, fresh.weights))
    before = _weights(other)
    with pytest.raises(WeightsError, match="r2plus1d.weights.h5") as error:
        load_weights_file(other, saved)
    assert "\n" not in str(error.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(other)))


def test_conversion_of_a_wrong_state_dict_writes_nothing(r2plus1d, tmp_path, capsys):
    state = _fake_torchvision_state_dict(r2plus1d)
    state.pop("layer2.1.conv1.0.0.weight")
    source, out = tmp_path / "sd.npz", tmp_path / "out.npz"
    np.savez(source, **state)
    assert main(["r2plus1d_18", str(source), str(out)]) == 2  # the check at conversion
    err = capsys.readouterr().err
    assert err.startswith("error:") and "layer2.1.conv1.0.0/kernel" in err and str(source) in err
    state = _fake_torchvision_state_dict(r2plus1d)
    state["stem.0.weight"] = state["stem.0.weight"][:, :, :, :5]  # a 5 x 7 kernel
    np.savez(source, **state)
    assert main(["r2plus1d_18", str(source), str(out)]) == 2
    assert "stem.0/kernel has shape (1, 5, 7, 3, 45)" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == [source]  # nothing written, no temporary left


def _fake_i3d_variables(model, seed: int = 0) -> dict[str, np.ndarray]:
    """Variables keyed and shaped like kinetics-i3d's RGB checkpoint, from the Keras layers' names."""
    rng = np.random.default_rng(seed)
    variables: dict[str, np.ndarray] = {}
    for layer in model.layers:
        scope = SCOPE + layer.name.replace(".", "/")
        if type(layer).__name__ == "Conv3D":
            variables[f"{scope}/w"] = rng.normal(0, 0.05, tuple(layer.kernel.shape)).astype(np.float32)
        elif type(layer).__name__ == "BatchNormalization":
            c = layer.moving_mean.shape[0]
            variables[f"{scope}/beta"] = rng.normal(0, 0.1, c).astype(np.float32)
            variables[f"{scope}/moving_mean"] = rng.normal(0, 0.1, (1, 1, 1, 1, c)).astype(np.float32)
            variables[f"{scope}/moving_variance"] = rng.uniform(0.5, 2, (1, 1, 1, 1, c)).astype(np.float32)
    variables[f"{SCOPE}Logits/Conv3d_0c_1x1/conv_3d/w"] = np.zeros((1, 1, 1, 1024, 400), np.float32)
    variables[f"{SCOPE}Logits/Conv3d_0c_1x1/conv_3d/b"] = np.zeros(400, np.float32)
    return variables


def _check_i3d(model, variables) -> None:
    scope = "Mixed_5b/Branch_2/Conv3d_0a_3x3"  # the original's name, kept by its checkpoints
    np.testing.assert_array_equal(model.get_layer(scope.replace("/", ".") + ".conv_3d").kernel.numpy(),
                                  variables[f"{SCOPE}{scope}/conv_3d/w"])
    bn = model.get_layer("Mixed_4b.Branch_1.Conv3d_0b_3x3.batch_norm")
    bn_scope = f"{SCOPE}Mixed_4b/Branch_1/Conv3d_0b_3x3/batch_norm"
    np.testing.assert_array_equal(bn.moving_mean.numpy(), variables[f"{bn_scope}/moving_mean"][0, 0, 0, 0])
    np.testing.assert_array_equal(bn.beta.numpy(), variables[f"{bn_scope}/beta"])


def test_i3d_conversion_from_npz(i3d, tmp_path):
    variables = _fake_i3d_variables(i3d)
    assert f"{SCOPE}Mixed_5b/Branch_2/Conv3d_0a_3x3/conv_3d/w" in variables
    assert f"{SCOPE}Mixed_5c/Branch_2/Conv3d_0b_3x3/conv_3d/w" in variables
    source, out = tmp_path / "vars.npz", tmp_path / "i3d.npz"
    np.savez(source, **variables, global_step=np.array(1))
    assert main(["i3d", str(source), str(out)]) == 0
    load_weights_file(i3d, out)
    _check_i3d(i3d, variables)


def test_i3d_conversion_from_tensorflow_checkpoint(i3d, tmp_path):
    from mbr_bench.benchmark.tf_runtime import import_tensorflow

    tf = import_tensorflow()
    variables = _fake_i3d_variables(i3d, seed=5)
    prefix = tmp_path / "rgb_imagenet" / "model.ckpt"
    with tf.Graph().as_default():
        tf_vars = {name: tf.compat.v1.Variable(value, name=name.replace("/", "_")) for name, value in variables.items()}
        saver = tf.compat.v1.train.Saver(var_list=tf_vars)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(prefix))
    out = tmp_path / "i3d.npz"
    assert main(["i3d", str(prefix), str(out)]) == 0
    load_weights_file(i3d, out)
    _check_i3d(i3d, variables)


def test_i3d_wrong_scope(i3d, tmp_path, capsys):
    source = tmp_path / "vars.npz"
    np.savez(source, **_fake_i3d_variables(i3d))
    assert main(["i3d", str(source), str(tmp_path / "out.npz"), "--scope", "Flow/inception_i3d/"]) == 2
    assert "Flow/inception_i3d/" in capsys.readouterr().err
    assert not (tmp_path / "out.npz").exists()
