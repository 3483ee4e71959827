"""Weight normalisation for keras-tcn's residual blocks (the TCN head's `norm="weight"`).

keras-tcn took `use_weight_norm` from tensorflow-addons' `WeightNormalization` wrapper; 3.5.5
removed it together with the unmaintained tensorflow-addons dependency (keras-tcn PR #276), so
`TCN(use_weight_norm=True)` is now rejected. This module restores it for Keras 3:

* `WeightNormConv1D` is a Conv1D whose kernel is reparameterised as w = g * v / ||v||, with one
  norm and one scale g per output channel (Salimans & Kingma 2016, "Weight Normalization").
  g and v (and the bias) are the trainable variables. g starts at ||v||, so the initial kernel
  equals the initializer's draw (data-independent initialisation; tensorflow-addons defaulted to
  a data-dependent one).
* `WeightNormTCN` is keras-tcn's `TCN` with the two dilated convolutions of every residual block
  built as `WeightNormConv1D`, as keras-tcn's `use_weight_norm=True` wrapped them; the 1x1
  shape-matching convolution stays plain.

Both are registered Keras serializables (package "mbr_bench"): import this module before loading
a saved model that contains them. The module imports TensorFlow, Keras and keras-tcn when it is
imported, so import it only where a model is built.
"""

from __future__ import annotations

from typing import Any

from ..tf_runtime import import_tensorflow

import_tensorflow()

import keras  # noqa: E402  (after the quiet TensorFlow start)
import tcn  # noqa: E402
from keras import ops  # noqa: E402
from tcn.tcn import ResidualBlock  # noqa: E402

# Keeps g * v / ||v|| finite should a channel's v ever reach exactly zero.
_NORM_EPSILON = 1e-12


@keras.saving.register_keras_serializable(package="mbr_bench")
class WeightNormConv1D(keras.layers.Conv1D):
    """A Conv1D with kernel w = g * v / ||v||; the norm is per output channel, over (taps, inputs).

    Takes Conv1D's arguments; the kernel initializer draws v. Only channels_last, groups=1.
    """

    def build(self, input_shape: Any) -> None:
        if self.data_format != "channels_last" or self.groups != 1:
            raise ValueError("WeightNormConv1D supports data_format='channels_last' and groups=1 only")
        input_channels = input_shape[-1]
        self.input_spec = keras.layers.InputSpec(min_ndim=3, axes={-1: input_channels})
        self.compute_output_shape(input_shape)  # Conv1D's shape checks
        self.kernel_v = self.add_weight(
            name="kernel_v",
            shape=(*self.kernel_size, input_channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            trainable=True,
        )
        self.kernel_g = self.add_weight(name="kernel_g", shape=(self.filters,), initializer="ones", trainable=True)
        self.kernel_g.assign(self._v_norm())
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                trainable=True,
            )
        else:
            self.bias = None
        self.built = True

    def _v_norm(self) -> Any:
        return ops.sqrt(ops.maximum(ops.sum(ops.square(self.kernel_v), axis=(0, 1)), _NORM_EPSILON**2))

    @property
    def kernel(self) -> Any:
        """The effective kernel g * v / ||v||, shape (kernel_size, input channels, filters)."""
        if not self.built:
            raise AttributeError("build the layer before reading its kernel")
        return self.kernel_v * (self.kernel_g / self._v_norm())

    # Conv1D saves `kernel` (here a derived value) and loads into a variable this layer does not
    # have; save and load the real variables (v, g, bias) instead.
    def save_own_variables(self, store: Any) -> None:
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store: Any) -> None:
        keras.layers.Layer.load_own_variables(self, store)

    def enable_lora(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("LoRA is not supported on a weight-normalised convolution")


class WeightNormResidualBlock(ResidualBlock):
    """keras-tcn's residual block with its dilated convolutions weight-normalised."""

    def _build_layer(self, layer: Any) -> None:
        # ResidualBlock.build passes every sub-layer through here; the only Conv1Ds among them are
        # the two dilated convolutions (the 1x1 matching conv is built separately).
        if type(layer) is keras.layers.Conv1D:
            layer = WeightNormConv1D.from_config(layer.get_config())
        super()._build_layer(layer)


@keras.saving.register_keras_serializable(package="mbr_bench")
class WeightNormTCN(tcn.TCN):
    """keras-tcn's `TCN` with weight-normalised residual blocks (what `use_weight_norm=True` was).

    Takes TCN's arguments; `use_batch_norm` and `use_layer_norm` must stay False, as keras-tcn
    allowed one normalisation at a time.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.use_batch_norm or self.use_layer_norm:
            raise ValueError("WeightNormTCN: only one normalization can be specified at once")

    def build(self, input_shape: Any) -> None:
        # tcn.TCN.build of keras-tcn 3.5.6, building WeightNormResidualBlock instead of ResidualBlock.
        self.build_output_shape = input_shape
        self.residual_blocks = []
        for _ in range(self.nb_stacks):
            for index, dilation in enumerate(self.dilations):
                filters = self.nb_filters[index] if isinstance(self.nb_filters, list) else self.nb_filters
                block = WeightNormResidualBlock(
                    dilation_rate=dilation,
                    nb_filters=filters,
                    kernel_size=self.kernel_size,
                    padding=self.padding,
                    activation=self.activation_name,
                    dropout_rate=self.dropout_rate,
                    use_batch_norm=False,
                    use_layer_norm=False,
                    kernel_initializer=self.kernel_initializer,
                    name=f"residual_block_{len(self.residual_blocks)}",
                )
                self.residual_blocks.append(block)
                block.build(self.build_output_shape)
                self.build_output_shape = block.res_output_shape
        for block in self.residual_blocks:  # tracked as attributes, like TCN does
            self.__setattr__(block.name, block)

        self.output_slice_index = None
        if self.padding == "same":
            time = self.tolist(self.build_output_shape)[1]
            if time is not None:
                self.output_slice_index = int(time / 2)
            else:
                self.padding_same_and_time_dim_unknown = True
        else:
            self.output_slice_index = -1
        self.slicer_layer = keras.layers.Lambda(lambda tt: tt[:, self.output_slice_index, :], name="Slice_Output")
        self.slicer_layer.build(self.tolist(self.build_output_shape))
