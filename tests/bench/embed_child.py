"""Child process for the memory benchmark: embed one video, print peak RSS as one JSON line.

Usage: python embed_child.py DATASET_YAML CACHE_DIR BATCH_SIZE
Prints {"frames", "computed", "vmhwm_kb_before", "vmhwm_kb", "ru_maxrss_kb"}: the peak RSS
(VmHWM) after TensorFlow started and the model was built and traced, and at the end.
"""

from __future__ import annotations

import json
import os
import resource
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def vmhwm_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def main(argv: list[str]) -> None:
    dataset_path, cache_dir, batch_size = argv[0], argv[1], int(argv[2])
    import keras
    import numpy as np

    from mbr_bench.benchmark.backbones import BACKBONES
    from mbr_bench.benchmark.data.manifest import load_dataset
    from mbr_bench.benchmark.features.cache import EmbeddingCache
    from mbr_bench.benchmark.features.embed import embed_video

    keras.utils.set_random_seed(0)
    backbone = BACKBONES.build("mobilenet_v2", weights="none")
    backbone.embed_images(np.zeros((batch_size, backbone.input_size, backbone.input_size, 3), np.uint8))
    before = vmhwm_kb()
    dataset = load_dataset(dataset_path)
    result = embed_video(dataset, dataset.videos[0], backbone, EmbeddingCache(cache_dir),
                         batch_size=batch_size, progress=False)
    print(json.dumps({
        "frames": result.frames, "computed": result.computed, "vmhwm_kb_before": before,
        "vmhwm_kb": vmhwm_kb(), "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
