"""Kinetics-400 checkpoints for the video networks (`r2plus1d.py`, `i3d.py`): conversion from the
published formats to one plain file, and loading it.

The published weights come in their framework's format: torchvision's R(2+1)D-18 as a PyTorch state
dict (`.pth`), DeepMind's I3D as a TensorFlow 1 checkpoint. Reading those needs PyTorch, or knowledge of
Sonnet's variable names, at every run; instead they are converted once, by this module's command

    python -m mbr_bench.benchmark.backbones.kinetics {r2plus1d_18,i3d} SOURCE OUT.npz

into an `.npz` keyed "<Keras layer name>/<weight name>" (weight names as Keras has them: kernel, bias,
gamma, beta, moving_mean, moving_variance). `load_weights_file` loads that, or a Keras `.weights.h5`
saved from the same architecture, and checks every weight before setting any, so a wrong file fails
with a message rather than loading half a network.

TensorFlow and Keras are imported only inside functions: importing this module stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import MbrError, WeightsError

ARCHITECTURES = ("r2plus1d_18", "i3d")
I3D_SCOPE = "RGB/inception_i3d/"
_BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_SONNET_NAMES = {"w": "kernel", "b": "bias", "beta": "beta", "gamma": "gamma", "moving_mean": "moving_mean",
                 "moving_variance": "moving_variance"}


def convert_command(arch: str = "{r2plus1d_18,i3d}", out: str | os.PathLike = "OUT.npz", source: str = "SOURCE") -> str:
    return f"python -m mbr_bench.benchmark.backbones.kinetics {arch} {source} {out}"


# --- converters ---------------------------------------------------------------------------------

def from_torchvision_r2plus1d(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """torchvision `r2plus1d_18` state dict -> arrays keyed "<layer>/<weight>" for `build_r2plus1d_18`.

    Conv3d weights (out, in, t, h, w) become Keras kernels (t, h, w, in, out); BatchNorm3d weight, bias,
    running_mean, running_var become gamma, beta, moving_mean, moving_variance. The classifier (fc.*)
    and num_batches_tracked are dropped; a "module." prefix (DataParallel) is removed.
    """
    arrays = {key.removeprefix("module."): _numpy(value) for key, value in state_dict.items()}
    batch_norms = {key.rsplit(".", 1)[0] for key in arrays if key.endswith(".running_mean")}
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if key.startswith("fc.") or key.endswith(".num_batches_tracked") or "." not in key:
            continue
        layer, name = key.rsplit(".", 1)
        if layer in batch_norms and name in _BN_NAMES:
            out[f"{layer}/{_BN_NAMES[name]}"] = value
        elif name == "weight" and value.ndim == 5:
            out[f"{layer}/kernel"] = np.ascontiguousarray(value.transpose(2, 3, 4, 1, 0))
        elif name == "bias":
            out[f"{layer}/bias"] = value
        else:
            raise WeightsError(f"state dict key {key} (shape {value.shape}) is not a Conv3d or BatchNorm3d "
                               "weight of torchvision's r2plus1d_18; pass the state dict of "
                               "torchvision.models.video.r2plus1d_18")
    return out


def from_deepmind_i3d(variables: Mapping[str, Any], scope: str = I3D_SCOPE) -> dict[str, np.ndarray]:
    """kinetics-i3d checkpoint variables -> arrays keyed "<layer>/<weight>" for `build_i3d`.

    "RGB/inception_i3d/Mixed_4b/Branch_1/Conv3d_0b_3x3/conv_3d/w" becomes
    "Mixed_4b.Branch_1.Conv3d_0b_3x3.conv_3d/kernel" (already (t, h, w, in, out)); batch_norm/beta,
    moving_mean and moving_variance keep their names, Sonnet's (1, 1, 1, 1, C) statistics reshaped to
    (C,). Variables outside `scope` and the classifier (Logits) are dropped.
    """
    out: dict[str, np.ndarray] = {}
    for key, value in variables.items():
        key = key.removesuffix(":0")
        if not key.startswith(scope):
            continue
        path = key[len(scope):].split("/")
        if path[0] == "Logits" or len(path) < 2 or path[-1] not in _SONNET_NAMES:
            continue  # the classifier; optimiser slots and the like
        array = _numpy(value)
        if path[-1] in ("moving_mean", "moving_variance", "beta", "gamma", "b"):
            array = array.reshape(-1)
        out[f"{'.'.join(path[:-1])}/{_SONNET_NAMES[path[-1]]}"] = array
    if not out:
        sample = ", ".join(sorted(variables)[:3]) or "none"
        raise WeightsError(f"no I3D variables under scope {scope!r} (variables found: {sample}, ...); "
                           "pass --scope with the checkpoint's prefix (e.g. RGB/inception_i3d/)")
    return out


def _numpy(value: Any) -> np.ndarray:
    """A NumPy copy of an array or a PyTorch tensor (without importing torch)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


# --- loading ------------------------------------------------------------------------------------

def _fix(model: Any) -> str:
    arch = model.name if model.name in ARCHITECTURES else "{r2plus1d_18,i3d}"
    return f"convert the checkpoint with `{convert_command(arch)}`"


def assign_weights(model: Any, arrays: Mapping[str, np.ndarray], source: str, fix: str | None = None) -> None:
    """Set every weight of `model` from `arrays` ("<layer>/<weight>" keys), after checking that every
    weight is there with its shape and nothing else is; else `WeightsError` and nothing is set."""
    fix = fix or _fix(model)
    expected: dict[str, Any] = {}
    for layer in model.layers:
        for variable in layer.weights:
            expected[f"{layer.name}/{variable.name}"] = variable
    for key, variable in expected.items():
        if key not in arrays:
            raise WeightsError(f"{source}: no weight {key} for {model.name} "
                               f"({len(expected) - sum(k in arrays for k in expected)} missing); {fix}")
        shape = tuple(np.shape(arrays[key]))
        if shape != tuple(variable.shape):
            raise WeightsError(f"{source}: weight {key} has shape {shape}, {model.name} needs "
                               f"{tuple(variable.shape)}; {fix}")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise WeightsError(f"{source}: {len(extra)} weights that {model.name} does not have "
                           f"(first: {extra[0]}); {fix}")
    for key, variable in expected.items():
        variable.assign(np.asarray(arrays[key], dtype=variable.dtype))


def load_weights_file(model: Any, path: str | os.PathLike) -> None:
    """Load a converted `.npz` or a Keras `.weights.h5` (saved from the same architecture) into `model`;
    `WeightsError` naming the file, the problem and the fix if it does not fit, with `model` unchanged."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found for {model.name}; pass the path of a converted "
                           f".npz or a .weights.h5, or {_fix(model)}")
    if path.suffix == ".npz":
        try:
            arrays = read_npz(path)
        except (OSError, ValueError) as error:
            raise WeightsError(f"{path}: not a readable .npz ({_one_line(error)}); {_fix(model)}") from error
        assign_weights(model, arrays, str(path))
        return
    if not path.name.endswith(".weights.h5"):
        raise WeightsError(f"{path}: unknown weights format (expected .npz or .weights.h5); {_fix(model)}")
    # Keras may fail after setting some layers, and only warns when it skips some: keep the weights to
    # put back, and take a warning as a failure.
    saved = [variable.numpy() for variable in model.weights]
    problem: BaseException | str | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except Exception as error:  # Keras raises ValueError, KeyError, OSError... by case
            problem = error
    skipped = [str(w.message) for w in caught if issubclass(w.category, UserWarning)
               and any(word in str(w.message).lower() for word in ("skipping", "could not", "mismatch"))]
    if problem is None and skipped:
        problem = skipped[0]
    if problem is not None:
        for variable, value in zip(model.weights, saved):
            variable.assign(value)
        raise WeightsError(f"{path}: cannot load into {model.name} ({_one_line(problem)}); the file must be "
                           f"saved from the same architecture, or {_fix(model)}") from (
            problem if isinstance(problem, BaseException) else None)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an `.npz`, read into memory (no pickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _one_line(error: BaseException | str) -> str:
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return (text or type(error).__name__)[:240]


# --- reading published checkpoints ------------------------------------------------------------------

def read_torch_state_dict(source: Path) -> dict[str, np.ndarray]:
    """A torchvision `.pth` state dict (needs PyTorch), or an `.npz` of its arrays keyed like it."""
    if source.suffix == ".npz":
        return read_npz(source)
    try:
        import torch
    except ImportError as error:
        raise WeightsError(f"{source}: reading a .pth needs PyTorch, which is not installed; convert on a "
                           "machine with torch, or pass an .npz of the state dict's arrays keyed like "
                           "torchvision (np.savez(f, **{k: v.numpy() for k, v in state_dict.items()}))") from error
    state = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return {key: _numpy(value) for key, value in state.items() if hasattr(value, "shape")}


def read_tf_checkpoint(source: Path) -> dict[str, np.ndarray]:
    """A TensorFlow checkpoint (its prefix, e.g. data/checkpoints/rgb_imagenet/model.ckpt), or an `.npz`
    of its variables keyed like it."""
    if source.suffix == ".npz":
        return read_npz(source)
    from ..tf_runtime import import_tensorflow

    tf = import_tensorflow()
    try:
        reader = tf.train.load_checkpoint(str(source))
    except Exception as error:  # tf raises NotFoundError / DataLossError / ValueError
        raise WeightsError(f"{source}: not a readable TensorFlow checkpoint ({_one_line(error)}); pass the "
                           "checkpoint prefix (the path without .index / .data-*), e.g. "
                           "data/checkpoints/rgb_imagenet/model.ckpt") from error
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def convert(arch: str, source: str | os.PathLike, scope: str = I3D_SCOPE) -> dict[str, np.ndarray]:
    """Read and convert a published checkpoint, then load it into a freshly built network (so that a
    mismatch fails here, not at use); the arrays for `load_weights_file`."""
    source = Path(source)
    if not source.exists() and not (arch == "i3d" and Path(f"{source}.index").is_file()):
        raise WeightsError(f"{source}: checkpoint not found; pass the path of the .pth / .npz, or for i3d the "
                           "checkpoint prefix (the path without .index / .data-*)")
    fix = ("SOURCE must be torchvision's r2plus1d_18 state dict" if arch == "r2plus1d_18"
           else f"SOURCE must be a kinetics-i3d RGB checkpoint (variables under {scope})")
    if arch == "r2plus1d_18":
        from .r2plus1d import build_r2plus1d_18

        arrays = from_torchvision_r2plus1d(read_torch_state_dict(source))
        model = build_r2plus1d_18(clip_length=None)
    elif arch == "i3d":
        from .i3d import build_i3d

        arrays = from_deepmind_i3d(read_tf_checkpoint(source), scope)
        model = build_i3d(clip_length=None)
    else:
        raise WeightsError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    assign_weights(model, arrays, str(source), fix)
    return arrays


def write_npz(arrays: Mapping[str, np.ndarray], out: str | os.PathLike) -> None:
    """Write `arrays` to `out` atomically: a temporary file beside it, renamed once complete."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mbr_bench.benchmark.backbones.kinetics",
        description="Convert a published Kinetics checkpoint into the .npz that the Keras video networks "
                    "load (keys '<layer>/<weight>'). The result is loaded into the network before it is "
                    "written, so a checkpoint of another architecture fails here.",
    )
    parser.add_argument("arch", choices=ARCHITECTURES,
                        help="r2plus1d_18: torchvision.models.video.r2plus1d_18; i3d: DeepMind kinetics-i3d RGB")
    parser.add_argument("source", help="r2plus1d_18: torchvision's .pth state dict (needs torch) or an .npz of "
                                       "its arrays keyed like it; i3d: a TensorFlow checkpoint prefix (e.g. "
                                       "data/checkpoints/rgb_imagenet/model.ckpt) or an .npz of its variables")
    parser.add_argument("out", help="the .npz to write (replaced atomically)")
    parser.add_argument("--scope", default=I3D_SCOPE,
                        help=f"i3d: the prefix of the network's variables in the checkpoint (default {I3D_SCOPE})")
    args = parser.parse_args(argv)
    try:
        arrays = convert(args.arch, args.source, args.scope)
        write_npz(arrays, args.out)
    except MbrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(arrays)} arrays for {args.arch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
