"""A baseline without temporal context: each frame's probability depends on its own embedding only.

It trains on the same windows as the temporal heads, so the difference in score between it and
them is what temporal modelling buys.
"""

from __future__ import annotations

from typing import Any

from .base import HEADS, Head, check_int, import_keras


@HEADS.register("frame_mlp")
class FrameMLPHead(Head):
    """Dropout(dropout) -> n_layers x Dense(units, relu) -> Dense(1, sigmoid), each Dense applied to every frame.

    Args:
        n_layers: hidden Dense layers (>= 1).
        units: units of each hidden layer.
        **common: sequence_length, batch_size, learning_rate, dropout, max_epochs, patience, seed,
            feature_norm (see `Head`).
    """

    def __init__(self, *, n_layers: int = 1, units: int = 128, **common: Any) -> None:
        super().__init__(**common)
        self.n_layers = n_layers
        self.units = units

    def _validate_architecture(self) -> None:
        check_int(self, "n_layers", minimum=1)
        check_int(self, "units", minimum=1)

    def build_model(self, input_dim: int) -> Any:
        keras = import_keras()
        inputs = keras.Input(shape=(None, input_dim), name="embeddings")
        x = keras.layers.Dropout(self.dropout, name="input_dropout")(inputs)
        for index in range(self.n_layers):
            x = self.per_frame(keras.layers.Dense(self.units, activation="relu", name=f"dense_{index}"))(x)
        outputs = self.per_frame(keras.layers.Dense(1, activation="sigmoid", name="frame_probability"))(x)
        return keras.Model(inputs, outputs, name="frame_mlp_head")
