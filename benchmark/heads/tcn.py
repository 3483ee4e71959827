"""The reference's TCN head: input dropout, stacked keras-tcn TCN layers, a per-frame sigmoid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...core.errors import ConfigError
from .base import HEADS, Head, check_choice, check_float, check_int, import_keras

NORMS = ("batch", "layer", "weight", "none")


@HEADS.register("tcn")
class TCNHead(Head):
    """Dropout(dropout) -> n_layers x TCN -> Dense(1, sigmoid) per frame.

    Each TCN layer is keras-tcn's `TCN` with one stack of residual blocks, causal padding (the
    keras-tcn default: a frame's output sees that frame and earlier ones only), skip connections,
    and the whole sequence returned.

    Args:
        n_layers: stacked TCN layers (reference grid 1, 2, 3).
        nb_filters: convolution filters per residual block (reference grid 256, 512, 1024).
        kernel_size: taps of each dilated convolution (reference grid 3, 5).
        norm: normalisation in the residual blocks: "batch", "layer", "weight" (weight
            normalisation, `heads.tcn_weight_norm`) or "none".
        dilations: dilation of each residual block.
        tcn_dropout: SpatialDropout1D rate inside the residual blocks (keras-tcn's dropout_rate).
        **common: sequence_length, batch_size, learning_rate, dropout, max_epochs, patience, seed,
            feature_norm (see `Head`).

    The reference's best TCN (Table 4.1) is sequence_length=300, n_layers=1, nb_filters=256,
    kernel_size=3, norm="batch", dropout=0.5, batch_size=8.
    """

    def __init__(
        self,
        *,
        n_layers: int = 1,
        nb_filters: int = 256,
        kernel_size: int = 3,
        norm: str = "batch",
        dilations: Sequence[int] = (1, 2, 4, 8, 16, 32),
        tcn_dropout: float = 0.0,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.n_layers = n_layers
        self.nb_filters = nb_filters
        self.kernel_size = kernel_size
        self.norm = norm
        self.dilations = dilations
        self.tcn_dropout = tcn_dropout

    def _validate_architecture(self) -> None:
        check_int(self, "n_layers", minimum=1, hint="the reference uses 1, 2 or 3")
        check_int(self, "nb_filters", minimum=1, hint="the reference uses 256, 512 or 1024")
        check_int(self, "kernel_size", minimum=2, hint="the reference uses 3 or 5")
        check_choice(self, "norm", NORMS)
        check_float(self, "tcn_dropout", low=0.0, high=1.0)
        dilations = self.dilations
        if (
            isinstance(dilations, (str, bytes))
            or not isinstance(dilations, Sequence)
            or not dilations
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dilations)
        ):
            raise ConfigError(
                f"head tcn: dilations must be a non-empty list of integers >= 1, got {dilations!r}; "
                "e.g. [1, 2, 4, 8, 16, 32]"
            )

    def receptive_field(self) -> int:
        """Frames a causal output sees, its own included: 1 + n_layers * 2 (kernel_size - 1) sum(dilations)."""
        return 1 + self.n_layers * 2 * (self.kernel_size - 1) * sum(self.dilations)

    def build_model(self, input_dim: int) -> Any:
        keras = import_keras()
        if self.norm == "weight":
            from .tcn_weight_norm import WeightNormTCN as tcn_layer
        else:
            from tcn import TCN as tcn_layer

        inputs = keras.Input(shape=(None, input_dim), name="embeddings")
        x = keras.layers.Dropout(self.dropout, name="input_dropout")(inputs)
        for index in range(self.n_layers):
            x = tcn_layer(
                nb_filters=self.nb_filters,
                kernel_size=self.kernel_size,
                nb_stacks=1,
                dilations=[int(d) for d in self.dilations],
                padding="causal",
                use_skip_connections=True,
                dropout_rate=self.tcn_dropout,
                return_sequences=True,
                use_batch_norm=self.norm == "batch",
                use_layer_norm=self.norm == "layer",
                name=f"tcn_{index}",
            )(x)
        outputs = self.per_frame(keras.layers.Dense(1, activation="sigmoid", name="frame_probability"))(x)
        return keras.Model(inputs, outputs, name="tcn_head")
