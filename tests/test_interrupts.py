"""Ctrl-C during training: recorded, then raised at a safe point (core/interrupts.py)."""

import os
import signal

import numpy as np
import pytest

from mbr_bench.core.interrupts import deferred_interrupts, raise_if_interrupted


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(autouse=True)
def python_handles_ctrl_c():
    """Python's own SIGINT handler, as in a terminal (a background job's shell starts it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_inside_the_block_waits_for_the_check_and_a_second_one_does_not():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            _ctrl_c()
            reached.append("after the signal")  # not raised here
            raise_if_interrupted()
    assert reached == ["after the signal"]
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            _ctrl_c()
            _ctrl_c()  # the second raises at once
            reached.append("not reached")
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_an_ignored_ctrl_c_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # e.g. a background job: the user asked not to be stopped
    with deferred_interrupts():
        _ctrl_c()
        raise_if_interrupted()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_a_ctrl_c_after_the_last_check_is_raised_when_the_block_ends():
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            _ctrl_c()
    raise_if_interrupted()  # nothing left over for the next block
    with deferred_interrupts():
        pass


def test_ctrl_c_during_a_fit_stops_it_at_the_next_batch():
    from mbr_bench.benchmark.heads import HEADS

    rng = np.random.default_rng(0)
    X = [rng.normal(size=(120, 4)).astype(np.float32)]
    y = [(X[0][:, 0] > 0).astype(np.int8)]
    epochs = []

    def on_epoch_end(epoch, logs):
        epochs.append(epoch)
        if epoch == 2:
            _ctrl_c()

    head = HEADS.build("frame_mlp", units=8, sequence_length=30, batch_size=4, max_epochs=50, patience=50, seed=0)
    with pytest.raises(KeyboardInterrupt):
        head.fit(X, y, [np.ones(120, np.float32)], on_epoch_end=on_epoch_end)
    assert epochs == [1, 2]  # stopped within epoch 3, at a batch's end
