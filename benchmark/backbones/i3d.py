"""I3D (Carreira and Zisserman 2017, "Quo Vadis, Action Recognition?"): DeepMind's kinetics-i3d RGB
network, `InceptionI3d` up to `Mixed_5c`, in Keras 3, so that its Kinetics checkpoints (converted by
`kinetics.py`) load into it by name.

Unlike `inflate.py`, which turns a Keras ImageNet network into a 3D one, this is the network DeepMind
trained on Kinetics: Inception-v1 inflated, then trained on video, with its own layer names.

Every unit is a Conv3D without bias, a BatchNorm without scale (Sonnet's default: no gamma, epsilon
1e-3) and a ReLU, with TensorFlow "SAME" padding as in the original, which Keras's "same" reproduces.
Layer names are the TensorFlow variable scopes with "/" replaced by "." (Keras forbids "/"):
"Mixed_4b.Branch_1.Conv3d_0b_3x3.conv_3d".
"""

from __future__ import annotations

from typing import Any

BN_EPSILON = 1e-3  # Sonnet's BatchNorm default
BN_MOMENTUM = 0.999  # Sonnet's decay_rate default; matters only when fine-tuning
OUTPUT_DIM = 1024

# Mixed (Inception) blocks, as in kinetics-i3d's i3d.py: Branch_0 1x1; Branch_1 1x1 then 3x3x3;
# Branch_2 1x1 then 3x3x3; Branch_3 3x3x3 max pool (stride 1) then 1x1.
MIXED: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Max pools between stages: name -> (pool size, strides), both (time, height, width)
POOLS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}


def branch_2_conv_name(mixed: str) -> str:
    """The name of Branch_2's 3x3x3 convolution: kinetics-i3d's original TF1 code calls Mixed_5b's
    "Conv3d_0a_3x3" (a slip in the original, kept in its checkpoints), every other one "Conv3d_0b_3x3"."""
    return "Conv3d_0a_3x3" if mixed == "Mixed_5b" else "Conv3d_0b_3x3"


def build_i3d(input_size: int = 224, clip_length: int | None = 16) -> Any:
    """The I3D RGB feature extractor: (batch, clip_length, input_size, input_size, 3) float32 RGB pixel
    values in [0, 255] -> (batch, 1024), the global average over time and space of `Mixed_5c`.

    The original ends with a fixed 2 x 7 x 7 average pool (valid at 224 x 224 and 16+ frames only) and
    averages the logits over the remaining time; a global average pool instead runs at any input size
    and clip length (None: any length, fixed per call). Pixels are scaled to [-1, 1] inside the model,
    as kinetics-i3d expects. Kinetics weights were trained on 224 x 224 crops of 64-frame clips.
    """
    from ..tf_runtime import import_tensorflow

    import_tensorflow()
    import keras

    layers = keras.layers
    clip = keras.Input(shape=(clip_length, input_size, input_size, 3), name="clip")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(clip)

    def unit(x: Any, scope: str, filters: int, kernel: tuple[int, int, int],
             strides: tuple[int, int, int] = (1, 1, 1)) -> Any:
        """kinetics-i3d's Unit3D: conv (no bias), BatchNorm (no scale), ReLU."""
        x = layers.Conv3D(filters, kernel, strides=strides, padding="same", use_bias=False,
                          name=f"{scope}.conv_3d")(x)
        x = layers.BatchNormalization(scale=False, epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                      name=f"{scope}.batch_norm")(x)
        return layers.ReLU(name=f"{scope}.relu")(x)

    def pool(x: Any, name: str) -> Any:
        size, strides = POOLS[name]
        return layers.MaxPooling3D(size, strides=strides, padding="same", name=name)(x)

    def mixed(x: Any, name: str) -> Any:
        b0, b1a, b1b, b2a, b2b, b3 = MIXED[name]
        branch_0 = unit(x, f"{name}.Branch_0.Conv3d_0a_1x1", b0, (1, 1, 1))
        branch_1 = unit(x, f"{name}.Branch_1.Conv3d_0a_1x1", b1a, (1, 1, 1))
        branch_1 = unit(branch_1, f"{name}.Branch_1.Conv3d_0b_3x3", b1b, (3, 3, 3))
        branch_2 = unit(x, f"{name}.Branch_2.Conv3d_0a_1x1", b2a, (1, 1, 1))
        branch_2 = unit(branch_2, f"{name}.Branch_2.{branch_2_conv_name(name)}", b2b, (3, 3, 3))
        branch_3 = layers.MaxPooling3D((3, 3, 3), strides=(1, 1, 1), padding="same",
                                       name=f"{name}.Branch_3.MaxPool3d_0a_3x3")(x)
        branch_3 = unit(branch_3, f"{name}.Branch_3.Conv3d_0b_1x1", b3, (1, 1, 1))
        return layers.Concatenate(axis=-1, name=f"{name}.concat")([branch_0, branch_1, branch_2, branch_3])

    x = unit(x, "Conv3d_1a_7x7", 64, (7, 7, 7), (2, 2, 2))
    x = pool(x, "MaxPool3d_2a_3x3")
    x = unit(x, "Conv3d_2b_1x1", 64, (1, 1, 1))
    x = unit(x, "Conv3d_2c_3x3", 192, (3, 3, 3))
    x = pool(x, "MaxPool3d_3a_3x3")
    x = mixed(x, "Mixed_3b")
    x = mixed(x, "Mixed_3c")
    x = pool(x, "MaxPool3d_4a_3x3")
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
        x = mixed(x, name)
    x = pool(x, "MaxPool3d_5a_2x2")
    x = mixed(x, "Mixed_5b")
    x = mixed(x, "Mixed_5c")
    features = layers.GlobalAveragePooling3D(name="avg_pool")(x)
    return keras.Model(clip, features, name="i3d")
