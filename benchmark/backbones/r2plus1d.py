"""R(2+1)D-18 (Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions for Action Recognition")
in Keras 3, layer for layer torchvision's `torchvision.models.video.r2plus1d_18`, so that its Kinetics-400
weights (converted by `kinetics.py`) load into it and compute what the PyTorch network computes.

Why a re-implementation rather than inflating a 2D network: every 3D convolution is factored into a
spatial (1 x 3 x 3) convolution and a temporal (3 x 1 x 1) one, with a BatchNorm and ReLU between them,
and the network was trained on video; no 2D ImageNet network has these layers.

PyTorch pads symmetrically; TensorFlow's "same" pads the extra row after when the stride is 2 and the
input even, which shifts every strided layer by a pixel. So each padded convolution is an explicit
`ZeroPadding3D` with torchvision's padding followed by a "valid" convolution.

Layer names are torchvision's state-dict prefixes ("layer2.0.conv1.0.3"), so a converted checkpoint maps
onto layers by name; layers without weights (padding, ReLU, addition) get names of their own.
"""

from __future__ import annotations

from typing import Any

# torchvision's Kinetics-400 normalisation (after scaling pixels to [0, 1]), RGB order
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
BN_EPSILON = 1e-5  # PyTorch's BatchNorm3d default
BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1, in Keras's convention
LAYER_PLANES = (64, 128, 256, 512)
BLOCKS_PER_LAYER = 2
OUTPUT_DIM = 512


def midplanes(inplanes: int, planes: int) -> int:
    """Channels between a block's spatial and temporal convolutions: chosen by torchvision so that the
    (2+1)D pair has about the parameters of a full 3 x 3 x 3 convolution from `inplanes` to `planes`."""
    return (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)


def build_r2plus1d_18(input_size: int = 112, clip_length: int | None = 16) -> Any:
    """The R(2+1)D-18 feature extractor: (batch, clip_length, input_size, input_size, 3) float32 RGB pixel
    values in [0, 255] -> (batch, 512), the global average over time and space of `layer4`'s output
    (torchvision's `avgpool`; the 400-way `fc` is left out). Normalisation happens inside the model.

    Kinetics weights were trained on 112 x 112 crops of 16-frame clips; any clip length (None: any
    length, fixed per call) and any input size of at least 16 pixels run.
    """
    from ..tf_runtime import import_tensorflow

    import_tensorflow()
    import keras

    layers = keras.layers
    clip = keras.Input(shape=(clip_length, input_size, input_size, 3), name="clip")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(clip)
    x = layers.Rescaling([1.0 / s for s in KINETICS_STD], offset=[-m / s for m, s in zip(KINETICS_MEAN, KINETICS_STD)],
                         name="normalize")(x)

    def conv(x: Any, name: str, filters: int, kernel: tuple[int, int, int], strides: tuple[int, int, int],
             padding: tuple[int, int, int]) -> Any:
        if any(padding):
            x = layers.ZeroPadding3D(tuple((p, p) for p in padding), name=f"{name}.pad")(x)
        return layers.Conv3D(filters, kernel, strides=strides, padding="valid", use_bias=False, name=name)(x)

    def bn(x: Any, name: str) -> Any:
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)

    def conv2plus1d(x: Any, name: str, planes: int, mid: int, stride: int) -> Any:
        """torchvision's Conv2Plus1D, a Sequential: 0 spatial conv, 1 BN, 2 ReLU, 3 temporal conv."""
        x = conv(x, f"{name}.0", mid, (1, 3, 3), (1, stride, stride), (0, 1, 1))
        x = bn(x, f"{name}.1")
        x = layers.ReLU(name=f"{name}.2")(x)
        return conv(x, f"{name}.3", planes, (3, 1, 1), (stride, 1, 1), (1, 0, 0))

    # R2Plus1dStem: a (1, 7, 7) convolution to 45 channels, then a (3, 1, 1) one to 64
    x = conv(x, "stem.0", 45, (1, 7, 7), (1, 2, 2), (0, 3, 3))
    x = bn(x, "stem.1")
    x = layers.ReLU(name="stem.2")(x)
    x = conv(x, "stem.3", 64, (3, 1, 1), (1, 1, 1), (1, 0, 0))
    x = bn(x, "stem.4")
    x = layers.ReLU(name="stem.5")(x)

    inplanes = 64
    for index, planes in enumerate(LAYER_PLANES, start=1):
        for block in range(BLOCKS_PER_LAYER):
            name = f"layer{index}.{block}"
            stride = 2 if index > 1 and block == 0 else 1
            mid = midplanes(inplanes, planes)  # both convolutions of a block use the first one's
            residual = x
            out = conv2plus1d(x, f"{name}.conv1.0", planes, mid, stride)
            out = bn(out, f"{name}.conv1.1")
            out = layers.ReLU(name=f"{name}.conv1.2")(out)
            out = conv2plus1d(out, f"{name}.conv2.0", planes, mid, 1)
            out = bn(out, f"{name}.conv2.1")
            if stride != 1 or inplanes != planes:  # Conv2Plus1D's downsample stride is (s, s, s)
                residual = conv(x, f"{name}.downsample.0", planes, (1, 1, 1), (stride,) * 3, (0, 0, 0))
                residual = bn(residual, f"{name}.downsample.1")
            x = layers.Add(name=f"{name}.add")([out, residual])
            x = layers.ReLU(name=f"{name}.relu")(x)
            inplanes = planes

    features = layers.GlobalAveragePooling3D(name="avgpool")(x)
    return keras.Model(clip, features, name="r2plus1d_18")
