"""Child process for the clips benchmark: clips per second of one clip network, frozen and finetune, as JSON.

Usage: python clips_child.py NETWORK
A process of its own, because the test session turns TensorFlow's oneDNN kernels off (tests/conftest.py,
for reproducible contract tests): a 3D convolution's backward pass without them is ~100x slower than
what a user's default runs. Prints {"frozen", "finetune", "n_params", "input_size", "clip_length", "device"}.
On a CPU the clips are tiny (64 px, 8 frames); on a GPU, the reference's: 16 frames at the network's size.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
CLIPS = 32


def main(name: str) -> None:
    import numpy as np

    from mbr_bench.benchmark.backbones import BACKBONES
    from mbr_bench.benchmark.heads import HEADS
    from mbr_bench.benchmark.tf_runtime import gpus

    on_gpu = bool(gpus())
    size, length = (BACKBONES.get(name).default_input_size, 16) if on_gpu else (64, 8)
    rng = np.random.default_rng(0)
    backbone = BACKBONES.build(name, weights="none", input_size=size, clip_length=length)
    frames = rng.integers(0, 255, (CLIPS + length, size, size, 3), np.uint8)
    backbone.start_video()
    backbone.embed_images(frames[:length])  # builds and traces
    backbone.finish_video()
    backbone.start_video()
    started = time.perf_counter()
    count = len(backbone.embed_images(frames)) + len(backbone.finish_video())
    frozen = count / (time.perf_counter() - started)

    head = HEADS.build("finetune", network=name, network_weights="none", input_size=size, clip_length=length,
                       batch_size=8, clips_per_epoch=CLIPS, max_epochs=2, seed=0)
    crops = rng.integers(0, 255, (CLIPS, size * size * 3), np.uint8)
    head.fit([crops], [(np.arange(CLIPS) % 2).astype(np.int8)], [np.ones(CLIPS)], stop_early=False)
    finetune = CLIPS / float(head.history_[-1]["seconds"])  # epoch 2: traced already
    print(json.dumps({"frozen": frozen, "finetune": finetune, "n_params": head.n_params_, "input_size": size,
                      "clip_length": length, "device": "GPU" if on_gpu else "CPU"}))


if __name__ == "__main__":
    main(sys.argv[1])
