"""The reference's LSTM head: input dropout, stacked LSTMs with halving units, a per-frame sigmoid."""

from __future__ import annotations

from typing import Any

from .base import HEADS, Head, check_int, import_keras


@HEADS.register("lstm")
class LSTMHead(Head):
    """Dropout(dropout) -> n_layers LSTM layers of units, units/2, units/4, ... -> Dense(1, sigmoid) per frame.

    Args:
        n_layers: stacked LSTM layers, each returning the whole sequence (reference grid 1, 2, 3).
        units: units of the first LSTM layer, halved at each following layer, at least 1
            (reference grid 64, 128, 256).
        **common: sequence_length, batch_size, learning_rate, dropout, max_epochs, patience, seed,
            feature_norm (see `Head`).

    The reference's best LSTM (Table 4.1) is sequence_length=300, n_layers=3, units=64, batch_size=8.
    """

    def __init__(self, *, n_layers: int = 1, units: int = 64, **common: Any) -> None:
        super().__init__(**common)
        self.n_layers = n_layers
        self.units = units

    def _validate_architecture(self) -> None:
        check_int(self, "n_layers", minimum=1, hint="the reference uses 1, 2 or 3")
        check_int(self, "units", minimum=1, hint="the reference uses 64, 128 or 256")

    def layer_units(self) -> list[int]:
        """Units of each LSTM layer: halving layer by layer, never below 1."""
        return [max(1, self.units // 2**index) for index in range(self.n_layers)]

    def build_model(self, input_dim: int) -> Any:
        keras = import_keras()
        inputs = keras.Input(shape=(None, input_dim), name="embeddings")
        x = keras.layers.Dropout(self.dropout, name="input_dropout")(inputs)
        for index, units in enumerate(self.layer_units()):
            x = keras.layers.LSTM(units, return_sequences=True, name=f"lstm_{index}")(x)
        outputs = self.per_frame(keras.layers.Dense(1, activation="sigmoid", name="frame_probability"))(x)
        return keras.Model(inputs, outputs, name="lstm_head")
