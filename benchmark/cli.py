"""The `mbr-bench` command. Heavy libraries (TensorFlow, OpenCV, pandas) load inside subcommands,
so `mbr-bench --help` starts in a fraction of a second."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn
from pathlib import Path

from .. import __version__
from ..core.errors import ConfigError, MbrError
from ..core.stores import MLFLOW_DB, OPTUNA_DB, default_storage_url, default_tracking_uri, redact
from .options import DEFAULT_FINAL, DEFAULT_PROTOCOL, FINAL_KINDS, PROTOCOLS, SAMPLERS
from .workers import HEARTBEAT_SECONDS

DEFAULT_WORKDIR = "mbr-work"


def _workdir(args: argparse.Namespace) -> Path:
    return Path(args.workdir or os.environ.get("MBR_BENCH_WORKDIR") or DEFAULT_WORKDIR)


def _existing_store(args: argparse.Namespace) -> str:
    """The tracking URI of a command that reads results: a mistyped --workdir is an error, not a new empty store."""
    if args.tracking_uri:
        return args.tracking_uri
    return default_tracking_uri(_workdir_holding(args, MLFLOW_DB, "--tracking-uri"))


def _workdir_holding(args: argparse.Namespace, store: str, other: str) -> Path:
    """The work directory, which must hold `store` (a file `mbr-bench run` writes); else the option `other`."""
    workdir = _workdir(args)
    if not (workdir / store).is_file():
        problem = "no such work directory" if not workdir.is_dir() else f"no {store} here: nothing was run in it"
        raise ConfigError(f"{workdir}: {problem}; pass the --workdir that `mbr-bench run` used, or {other}")
    return workdir


# ---------------------------------------------------------------------------------------- synth
def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import generate

    manifest = generate(args.out, n_videos=args.videos, n_frames=args.frames, seed=args.seed, n_test=args.test,
                        pose_format=args.pose_format)
    print(f"wrote {manifest}")
    print(f"next: mbr-bench dataset check {manifest}")
    return 0


# -------------------------------------------------------------------------------- dataset check
def cmd_dataset_cut(args: argparse.Namespace) -> int:
    from .data.pieces import cut_recording

    settings = {}
    if args.centre:
        settings["crop"] = {"centre": list(args.centre)}
    if args.heading:
        settings["pose"] = {"heading": list(args.heading)}
    manifest = cut_recording(args.pose, args.labels, args.out, fps=args.fps, n_pieces=args.pieces,
                             test_pieces=tuple(args.test_pieces), **settings)
    print(f"wrote {args.pieces} pieces and {manifest}; check it with `mbr-bench dataset check {manifest}`")
    return 0


def cmd_dataset_check(args: argparse.Namespace) -> int:
    from .data.check import check_dataset
    from .data.manifest import load_dataset
    from .table import format_table

    dataset = load_dataset(args.path)
    report = check_dataset(dataset, progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(_report_json(report), indent=2))
        return 0
    print(f"dataset {dataset.name} ({dataset.path}): {len(report.videos)} videos, behaviours: "
          f"{', '.join(dataset.behaviours) or '(none)'}; crop {dataset.crop.mode} {dataset.crop.size}px")
    parts = {video.bodyparts for video in report.videos}
    shared_parts = parts.pop() if len(parts) == 1 else None
    print(format_table(
        ["video", "split", "frames", "fps", "resolution", "body parts"],
        [[v.id, v.split or "-", v.frames, f"{v.fps:g}", v.resolution,
          len(v.bodyparts) if shared_parts is not None else ",".join(v.bodyparts) or "-"] for v in report.videos],
    ))
    if shared_parts:
        print(f"body parts ({len(shared_parts)}): {', '.join(shared_parts)}")
    if dataset.behaviours:
        print()
        print(format_table(
            ["video", "split", "behaviour", "positive frames", "%", "bouts", "mean bout (frames)"],
            [[v.id, v.split or "-", behaviour, s.positives, f"{s.percent:.1f}", s.bouts, f"{s.mean_bout:.1f}"]
             for v in report.videos for behaviour, s in v.behaviours.items()],
        ))
    for note in report.notes:
        print(f"note: {note}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("ok" + (f" ({len(report.warnings)} warning(s))" if report.warnings else ""))
    return 0


def _report_json(report) -> dict:  # noqa: ANN001
    from dataclasses import asdict

    return {
        "dataset": str(report.dataset.path),
        "behaviours": list(report.dataset.behaviours),
        "videos": [asdict(video) for video in report.videos],
        "warnings": report.warnings,
        "notes": report.notes,
    }


# ---------------------------------------------------------------------------------------- embed
def cmd_embed(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .backbones import build_backbone
    from .data.manifest import load_dataset
    from .features.embed import embed_dataset
    from .table import format_table

    dataset = load_dataset(args.dataset)
    crop = dataset.crop
    if args.crop_mode or args.crop_size:
        crop = replace(crop, **{k: v for k, v in (("mode", args.crop_mode), ("size", args.crop_size)) if v})
        dataset = replace(dataset, crop=crop)
    from .backbones import check_backbone_names, check_weights, crop_parts, part_kinds

    check_backbone_names("--backbone", args.backbone)
    check_weights(args.weights, args.backbone)
    also_track = any("track" in part_kinds(name) for name in args.backbone)
    companions = crop_parts(args.backbone, dataset, args.weights)  # one crop pass for all image and flow backbones
    cache = _cache(args, _workdir(args))
    progress = not args.no_progress and sys.stderr.isatty()
    rows = []
    for name in args.backbone:
        backbone = build_backbone(name, dataset, weights=args.weights)
        for result in embed_dataset(dataset, backbone, cache, crop=crop, batch_size=args.batch_size,
                                    video_ids=args.videos, progress=progress, also_track=also_track,
                                    companions=companions):
            rows.append({"backbone": name, "weights": backbone.weights_id, **result.as_dict()})
    if args.json:
        print(json.dumps({"dataset": str(dataset.path), "cache_dir": str(cache.root), "videos": rows}, indent=2))
        return 0
    print(format_table(
        ["backbone", "video", "frames", "dim", "computed now", "seconds", "frames/s", "cache path"],
        [[r["backbone"], r["video_id"], r["frames"], r["dim"], r["computed"], f"{r['seconds']:.2f}",
          f"{r['computed'] / r['seconds']:.0f}" if r["computed"] else "cached", r["path"]] for r in rows],
    ))
    computed = sum(r["computed"] for r in rows)
    print(f"{computed} frames computed, {sum(r['frames'] for r in rows) - computed} read from {cache.root}")
    return 0


# ------------------------------------------------------------------------------------------ run
def cmd_run(args: argparse.Namespace) -> int:
    from .runner import RunOptions, run
    from .table import format_table

    workdir = _workdir(args)
    outcomes = run(RunOptions(
        **_plan_fields(args), protocol=args.protocol, storage=args.storage, tracking_uri=args.tracking_uri,
        seed=args.seed, batch_size=args.batch_size, heartbeat=args.heartbeat,
        allow_empty_folds=args.allow_empty_folds, yes=args.yes, allow_cpu_finetune=args.allow_cpu_finetune,
    ))
    print()
    print(format_table(
        ["behaviour", "backbone", "head", "trials", "pruned", "failed", "best CV PR-AUC", "positive rate", "best params"],
        [[o.behaviour, o.backbone, o.head, o.complete, o.pruned, o.failed,
          f"{o.best_score:.3f} ± {o.best_std:.3f}" if o.complete else "-", f"{o.positive_rate:.3f}",
          ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in o.best_params.items())]
         for o in sorted(outcomes, key=lambda o: (o.behaviour, -(o.best_score if o.complete else -1)))],
    ))
    where = f"--tracking-uri {args.tracking_uri}" if args.tracking_uri else f"--workdir {workdir}"
    print(f"\nbrowse every trial, fold, PR curve and confusion matrix: mbr-bench ui {where}")
    return 0


# ------------------------------------------------------------------------------------- estimate
def _plan_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The RunOptions fields of `_plan_options` (and work directory, cache, progress): what run and estimate share."""
    return dict(study=args.study, workdir=_workdir(args), dataset=args.dataset, backbones=args.backbones,
                heads=args.heads, n_trials=args.n_trials, timeout=args.timeout, sampler=args.sampler,
                search_space=args.search_space, weights=args.weights, cache_dir=args.cache_dir,
                progress=not args.no_progress)


def cmd_estimate(args: argparse.Namespace) -> int:
    from .estimate import describe_machine, report_lines
    from .progress import SearchProgress
    from .runner import RunOptions, estimate_run, plan_run

    options = RunOptions(**_plan_fields(args))
    progress = SearchProgress(enabled=options.progress)
    estimate = estimate_run(options, plan_run(options, progress), progress)
    print("\n".join(report_lines(estimate)))
    print(describe_machine(estimate))
    return 0


# ---------------------------------------------------------------------------------- leaderboard
def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .postprocess import parse_threshold_rule
    from .results.ensemble import parse_ensembles
    from .results.leaderboard import LeaderboardOptions, build_leaderboard
    from .results.refit import RefitSettings
    from .results.report import behaviour_heading, terminal_table

    parse_threshold_rule(args.threshold)  # a typo fails now, not after the first refit
    ensembles = [members for text in args.ensemble or [] for members in parse_ensembles(text)]
    workdir = _workdir(args)
    tracking_uri = _existing_store(args)
    board = build_leaderboard(LeaderboardOptions(
        study=args.study, workdir=workdir, tracking_uri=tracking_uri, out_dir=args.out,
        refit=not args.no_refit, register=not args.no_register, progress=not args.no_progress,
        refit_settings=RefitSettings(threshold_rule=args.threshold, seed=args.seed, dataset=args.dataset,
                                     progress=not args.no_progress and sys.stderr.isatty(), final=args.final,
                                     refit_seeds=args.refit_seeds),
        ensembles=ensembles, two_stream=not args.no_two_stream, cache_dir=args.cache_dir,
    ))
    for behaviour, rows in board.rows.items():
        print(f"\n{behaviour_heading(behaviour, rows, board.test_evaluations.get(behaviour))}")
        print(terminal_table(rows))
    print()
    for behaviour, model in board.registered.items():
        print(f"best {behaviour} model: {model}  (mbr-bench predict --model {model.rsplit('/', 1)[0]} VIDEO)")
    for key in ("html", "markdown", "csv"):
        print(f"wrote {board.files[key]}")
    figures = [path for key, path in board.files.items() if key not in ("html", "markdown", "csv")]
    if figures:
        print(f"wrote {len(figures)} figure(s) to {figures[0].parent}")
    return 0


# -------------------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    from ..tracking.queries import default_tracking_uri
    from .bundle import resolve_bundle
    from .predict import PredictOptions, predict_videos
    from .table import format_table

    workdir = _workdir(args)
    uri = args.tracking_uri or default_tracking_uri(workdir)
    bundles = [resolve_bundle(model, uri, workdir / "models") for model in args.model]
    outcomes = predict_videos(PredictOptions(
        bundles=bundles, inputs=args.videos, out_dir=args.out, cache=_cache(args, workdir),
        pose=args.pose, exclusive=args.exclusive, batch_size=args.batch_size,
        progress=not args.no_progress and sys.stderr.isatty(),
    ))
    behaviours = [bundle.behaviour for bundle in bundles]
    print(format_table(
        ["video", "frames", "fps", *[f"{b} frames" for b in behaviours], "seconds", "csv"],
        [[o.video.name, o.frames, f"{o.fps:g}", *[o.positives.get(b, 0) for b in behaviours],
          f"{o.seconds:.1f}", o.csv] for o in outcomes],
    ))
    return 0


# ------------------------------------------------------------------------------------------- ui
def cmd_ui(args: argparse.Namespace) -> int:
    from ..tracking.queries import experiment_url, ui_command
    from ..tracking.runs import behaviour_experiments
    from ..tracking.serve import check_port_free, format_host, supervise

    uri = _existing_store(args)
    check_port_free(args.host, args.port)  # MLflow itself logs a taken port and exits 0
    url = f"http://{format_host(args.host)}:{args.port}"
    print(f"MLflow UI on {url} (store {redact(uri)}); Ctrl-C stops it", file=sys.stderr)
    # Links straight to each behaviour's runs table, best CV first, with the board's columns.
    for name, experiment_id in behaviour_experiments(uri):
        print(f"  {name}: {experiment_url(url, experiment_id)}", file=sys.stderr)
    return supervise(ui_command(uri, host=args.host, port=args.port))


# ------------------------------------------------------------------------------------ dashboard
def cmd_dashboard(args: argparse.Namespace) -> int:
    from ..tracking.serve import check_port_free, dashboard_command, format_host, supervise

    storage = args.storage or default_storage_url(_workdir_holding(args, OPTUNA_DB, "--storage"))
    argv = dashboard_command(storage, host=args.host, port=args.port)
    check_port_free(args.host, args.port)
    print(f"optuna-dashboard on http://{format_host(args.host)}:{args.port} (storage {redact(storage)}); Ctrl-C "
          "stops it. It numbers trials from 0, the progress lines and MLflow from 1", file=sys.stderr)
    return supervise(argv)


# ---------------------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    from ..tracking.serve import resolve_options, serve

    return serve(resolve_options(
        _workdir(args), backend_store_uri=args.backend_store_uri, artifacts_destination=args.artifacts_destination,
        host=args.host, port=args.port, workers=args.workers, allowed_hosts=args.allowed_hosts,
    ))


# ------------------------------------------------------------------------------------ backbones
def cmd_backbones(args: argparse.Namespace) -> int:
    from .backbones import BACKBONES
    from .table import format_table

    rows = []
    for name in BACKBONES.list():
        factory = BACKBONES.get(name)
        kind = BACKBONES.kind_of(name)
        if kind == "image":
            rows.append([name, "image", f"{factory.default_input_size}px", factory.output_dim, factory.preprocessing])
        elif kind == "flow":
            built = factory(weights="none")
            rows.append([name, "flow", f"{factory.default_input_size}px crops, in order", built.output_dim,
                         factory.preprocessing])
        elif kind == "clip":
            built = factory(weights="none")
            rows.append([name, "clip", f"{factory.default_input_size}px crops, {built.clip_length}-frame clips",
                         built.output_dim, factory.preprocessing])
        elif kind == "track":
            groups = factory().groups()
            rows.append([name, "track", "video (tracker path)", sum(groups.values()), _groups(groups)])
        elif hasattr(factory, "groups"):
            groups = factory().groups(_EXAMPLE_PARTS)
            rows.append([name, "pose", "pose file", f"{sum(groups.values())} for 8 parts", _groups(groups)])
        else:
            rows.append([name, "pose", "pose file", f"{factory().output_dim_for(_EXAMPLE_PARTS)} for 8 parts",
                         "one-frame pose features (v1)"])
    print(format_table(["name", "input", "size", "dim", "features"], rows))
    print("fuse any of them with '+', e.g. --backbones mobilenet_v2+track: parts joined per frame, each scaled "
          "on the training videos")
    return 0


_EXAMPLE_PARTS = ("leftear", "lefthindpaw", "midbody", "rightear", "righthindpaw", "snout", "tailbase", "tailtip")


def _groups(groups: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in groups.items() if n)


# ---------------------------------------------------------------------------------------- parser
# Options several subcommands share are declared once, in parent parsers (argparse `parents=`);
# where subcommands word an option's help differently, the parent takes that wording.
def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def _workdir_option(what: str = "work directory") -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--workdir", help=f"{what} (default: $MBR_BENCH_WORKDIR or ./{DEFAULT_WORKDIR})")
    return parent


def _tracking_uri_option() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///WORKDIR/mlflow.db)")
    return parent


def _batch_size_option(what: str = "embedding batch size") -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--batch-size", type=int, default=32, help=f"{what} (default: 32)")
    return parent


def _no_progress_option(what: str) -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--no-progress", action="store_true", help=f"no {what}")
    return parent


def _seed_option(what: str) -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--seed", type=int, default=0, help=f"{what} (default: 0)")
    return parent


def _cache_dir_option() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--cache-dir", type=Path,
                        help="embedding cache, may be shared by workers (default: $MBR_BENCH_CACHE_DIR or WORKDIR/cache)")
    return parent


def _cache(args: argparse.Namespace, workdir: Path) -> Any:
    from .features.cache import EmbeddingCache, default_cache_dir

    return EmbeddingCache(args.cache_dir or default_cache_dir(workdir))


def _port_option() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    return parent


Commands = argparse._SubParsersAction  # what `add_subparsers` returns


def _add_synth(commands: Commands) -> None:
    synth = commands.add_parser("synth", help="write the built-in synthetic open-field dataset",
                                parents=[_seed_option("random seed")])
    synth.add_argument("out", type=Path, help="output folder (gets videos/, poses/, labels/, dataset.yaml)")
    synth.add_argument("--videos", type=int, default=6, help="number of videos (default: 6)")
    synth.add_argument("--frames", type=int, default=1500, help="frames per video at 10 fps (default: 1500)")
    synth.add_argument("--test", type=int, default=2, help="videos held out as the test split (default: 2)")
    synth.add_argument("--pose-format", default="dlc", choices=["dlc", "lightning_pose", "sleap", "sleap_analysis"],
                       help="pose files as DeepLabCut CSV (default), LightningPose CSV, SLEAP .slp or SLEAP analysis .h5")
    synth.set_defaults(func=cmd_synth)


def _add_dataset(commands: Commands) -> None:
    dataset = commands.add_parser("dataset", help="inspect a dataset manifest")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    check = dataset_commands.add_parser("check", help="read every file of a dataset.yaml and report per video")
    check.add_argument("path", type=Path, help="dataset.yaml (or the folder holding it)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=cmd_dataset_check)
    cut = dataset_commands.add_parser(
        "cut", help="cut one long recording (pose + labels) into pieces: a pose-only dataset with videos to "
                    "leave out")
    cut.add_argument("--pose", required=True, type=Path, help="the recording's DeepLabCut pose CSV")
    cut.add_argument("--labels", required=True, type=Path, help="its labels file, one row per pose row")
    cut.add_argument("--fps", required=True, type=float, help="the recording's frame rate")
    cut.add_argument("--pieces", required=True, type=int, metavar="N", help="number of consecutive pieces")
    cut.add_argument("--test-pieces", nargs="+", type=int, required=True, metavar="K",
                     help="pieces (1..N) held out as split test; the others are split train")
    cut.add_argument("--out", required=True, type=Path, help="folder for the pieces and dataset.yaml")
    cut.add_argument("--centre", nargs="+", metavar="PART", help="crop.centre body part(s) (default: midbody)")
    cut.add_argument("--heading", nargs=2, metavar=("BACK", "FRONT"),
                     help="pose.heading body parts (default: tailbase snout)")
    cut.set_defaults(func=cmd_dataset_cut)


def _add_embed(commands: Commands) -> None:
    embed = commands.add_parser(
        "embed", help="compute (or reuse) per-frame embeddings for a dataset",
        parents=[_workdir_option(), _cache_dir_option(), _batch_size_option("frames per forward pass"),
                 _no_progress_option("progress bar")])
    embed.add_argument("--dataset", required=True, type=Path, help="dataset.yaml")
    embed.add_argument("--backbone", required=True, nargs="+", metavar="NAME",
                       help="one or more backbones (see `mbr-bench backbones`)")
    embed.add_argument("--weights", default=None, metavar="[NAME=]VALUE,...",
                       help="backbone weights: imagenet (default for CNNs; Keras downloads once), none, or a file; "
                            "NAME=VALUE for one backbone, comma-separated, e.g. imagenet,r2plus1d_18=r21d.npz")
    embed.add_argument("--videos", nargs="+", metavar="ID", help="only these video ids")
    embed.add_argument("--crop-mode", choices=["pose", "tracker", "full"], help="override crop.mode of the manifest")
    embed.add_argument("--crop-size", type=int, help="override crop.size (pixels) of the manifest")
    embed.add_argument("--json", action="store_true", help="print the per-video summary as JSON")
    embed.set_defaults(func=cmd_embed)


def _plan_options() -> argparse.ArgumentParser:
    """What a run does: `run` runs it, `estimate` costs it."""
    parent = _parent()
    parent.add_argument("--study", required=True, metavar="BEHAVIOUR", help="a behaviour of the dataset, or all")
    parent.add_argument("--dataset", type=Path,
                        help="dataset.yaml (default: the built-in synthetic open field, written once to WORKDIR)")
    parent.add_argument("--backbones", nargs="+", metavar="NAME",
                        help="default: pose mobilenet_v2 (built-in data) or resnet50v2 inception_resnet_v2")
    parent.add_argument("--heads", nargs="+", metavar="NAME", help="default: lstm tcn frame_mlp")
    parent.add_argument("--n-trials", type=int,
                        help="trial budget of each study, shared by every worker that joins it; a rerun finishes "
                             "what is missing (default: 2 built-in, 20 otherwise; grid: the whole grid)")
    parent.add_argument("--timeout", type=float,
                        help="time budget of each study in seconds: a trial still training at the deadline stops "
                             "at its epoch's end and is handed back (retried by the next run)")
    parent.add_argument("--sampler", choices=SAMPLERS, default=SAMPLERS[0],
                        help="tpe: seeded Bayesian search (default); grid: the search space's grid, as the reference")
    parent.add_argument("--search-space", type=Path, metavar="FILE",
                        help="YAML search space overriding the packaged one (keys = head parameters)")
    parent.add_argument("--weights", metavar="[NAME=]VALUE,...",
                        help="backbone weights: imagenet (default), none, or a file; NAME=VALUE for one backbone, "
                             "comma-separated, e.g. imagenet,r2plus1d_18=r21d.npz")
    return parent


def _add_run(commands: Commands) -> None:
    run = commands.add_parser(
        "run", help="search every backbone x head pair for a behaviour (Optuna + MLflow)",
        parents=[_plan_options(), _workdir_option(), _tracking_uri_option(), _cache_dir_option(),
                 _seed_option("sampler and training seed"), _batch_size_option(), _no_progress_option("progress lines")])
    run.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                     help="how each fold's training length is chosen without the video it is scored on: "
                          "mean_curve (default: one epoch count for all folds, where their mean held-out PR-AUC "
                          "peaks) or inner (early stopping on another training video); see README, Protocol")
    run.add_argument("--storage", help="Optuna storage URL (default: sqlite:///WORKDIR/optuna.db)")
    run.add_argument("--heartbeat", type=int, default=HEARTBEAT_SECONDS, metavar="SECONDS",
                     help=f"worker heartbeat; a trial silent for 4 heartbeats is failed and retried "
                          f"(default: {HEARTBEAT_SECONDS})")
    run.add_argument("--allow-empty-folds", action="store_true",
                     help="leave out (with a warning) folds whose video lacks the behaviour, instead of stopping")
    run.add_argument("--yes", action="store_true",
                     help="start even when the run is estimated at more than a day on this machine (see "
                          "`mbr-bench estimate`)")
    run.add_argument("--allow-cpu-finetune", action="store_true",
                     help="train the finetune head (a clip network end to end) without a GPU, knowing what the "
                          "estimate says it costs")
    run.set_defaults(func=cmd_run)


def _add_estimate(commands: Commands) -> None:
    estimate = commands.add_parser(
        "estimate", help="what `run` (and the leaderboard after it) will cost on this machine, before it starts",
        parents=[_plan_options(), _workdir_option(), _cache_dir_option(), _no_progress_option("progress lines")])
    estimate.set_defaults(func=cmd_estimate)


def _add_leaderboard(commands: Commands) -> None:
    board = commands.add_parser(
        "leaderboard", help="refit each pair's best trial, test it once, and compare all pairs (table, CSV, HTML)",
        parents=[_workdir_option(), _tracking_uri_option(), _cache_dir_option(), _seed_option("refit training seed"),
                 _no_progress_option("progress lines")])
    board.add_argument("--study", required=True, metavar="BEHAVIOUR", help="a searched behaviour, or all")
    board.add_argument("--dataset", type=Path,
                       help="dataset.yaml, if it moved since the search (default: the one the search recorded)")
    board.add_argument("--out", type=Path, help="folder for leaderboard.{csv,md,html} and PNGs (default: "
                       "WORKDIR/leaderboard)")
    board.add_argument("--threshold", default="max_f1", metavar="RULE",
                       help="how the decision threshold is chosen on the CV folds: max_f1 (default) or "
                            "recall:0.9 (the highest threshold reaching that recall)")
    board.add_argument("--final", choices=FINAL_KINDS, default=DEFAULT_FINAL,
                       help="the model deployed and tested: refit (default: one model on all training videos, "
                            "trained with --refit-seeds seeds) or ensemble (the K fold models of the best trial, on "
                            "whose predictions the threshold is tuned); see README, Protocol")
    board.add_argument("--refit-seeds", type=int, default=3, metavar="N",
                       help="with --final refit: seeds trained, the spread of their test scores is reported "
                            "(default: 3)")
    board.add_argument("--no-refit", action="store_true",
                       help="show current final models only, train nothing (a stale one is not shown)")
    board.add_argument("--no-register", action="store_true",
                       help="do not register the best model per behaviour in the MLflow model registry")
    board.add_argument("--ensemble", nargs="+", metavar="PAIR,PAIR",
                       help="ensemble rows: searched pairs joined by commas (mobilenet_v2+lstm,flow_hof+lstm), "
                            "their probabilities averaged with weights, threshold and post-processing chosen on "
                            "their out-of-fold predictions; see README, Streams and fusion")
    board.add_argument("--no-two-stream", action="store_true",
                       help="no default two-stream row (the best appearance pair with the best flow or track pair)")
    board.set_defaults(func=cmd_leaderboard)


def _add_predict(commands: Commands) -> None:
    predict = commands.add_parser(
        "predict", help="label new videos with trained models (one CSV per video)",
        parents=[_workdir_option("work directory: embedding cache, downloaded models"), _tracking_uri_option(),
                 _cache_dir_option(), _batch_size_option(), _no_progress_option("progress bar")])
    predict.add_argument("videos", nargs="+", type=Path, metavar="VIDEO_OR_FOLDER", help="video files or folders")
    predict.add_argument("--model", required=True, action="append", metavar="MODEL",
                         help="a refit run id, a registered model name (mbr-bench.BEHAVIOUR[/VERSION]) or a model "
                              "folder; repeat for several behaviours in one ethogram")
    predict.add_argument("--pose", type=Path, help="pose file (one video) or folder of pose files (default: "
                         "beside each video, <stem>.csv/.h5 or <stem>DLC*.csv/.h5)")
    predict.add_argument("--out", type=Path, default=Path("predictions"),
                         help="folder for the CSVs (default: ./predictions)")
    predict.add_argument("--exclusive", action="store_true",
                         help="at most one behaviour per frame (the most probable of those detected)")
    predict.set_defaults(func=cmd_predict)


def _add_ui(commands: Commands) -> None:
    ui = commands.add_parser("ui", help="start the MLflow UI on the work directory's store (127.0.0.1)",
                             parents=[_workdir_option(), _tracking_uri_option(), _port_option()])
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, this machine only)")
    ui.set_defaults(func=cmd_ui)


def _add_dashboard(commands: Commands) -> None:
    dashboard = commands.add_parser(
        "dashboard", help="start optuna-dashboard on the searches' Optuna storage (127.0.0.1; the [dashboard] extra)",
        parents=[_workdir_option()])
    dashboard.add_argument("--storage", help="Optuna storage URL (default: sqlite:///WORKDIR/optuna.db)")
    dashboard.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, this machine only)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    dashboard.set_defaults(func=cmd_dashboard)


def _add_serve(commands: Commands) -> None:
    serve = commands.add_parser(
        "serve", help="run an MLflow tracking server for a team's workers (proxied artifacts; 127.0.0.1 by default)",
        parents=[_workdir_option(), _port_option()])
    serve.add_argument("--backend-store-uri", metavar="URI",
                       help="where runs are kept: sqlite:////abs/mlflow.db (one machine) or postgresql://"
                            "user:password@host:5432/mlflow (a team) (default: sqlite:///WORKDIR/mlflow.db)")
    serve.add_argument("--artifacts-destination", metavar="DIR",
                       help="where the server stores uploaded artifacts: a folder or s3://... (default: "
                            "mlartifacts/ beside a SQLite store, else WORKDIR/mlartifacts)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="bind address (default: 127.0.0.1, this machine only; 0.0.0.0: every interface, "
                            "no authentication)")
    serve.add_argument("--workers", type=int, help="server worker processes (default: MLflow's, 4)")
    serve.add_argument("--allowed-hosts", nargs="+", metavar="HOST",
                       help="Host headers the server accepts, e.g. mlflow:5000 'gpu-box:*' (comma-separated or "
                            "repeated; default: localhost and private addresses, plus this machine's name when "
                            "--host is not loopback)")
    serve.set_defaults(func=cmd_serve)


def _add_backbones(commands: Commands) -> None:
    backbones = commands.add_parser("backbones", help="list registered backbones")
    backbones.set_defaults(func=cmd_backbones)


class _Parser(argparse.ArgumentParser):
    """A usage mistake (`--timeout abc`, a missing option) is one line, like every other error, not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mbr-bench",
        description="Benchmark mouse behaviour recognition models (backbone x temporal head) on annotated videos.",
    )
    parser.add_argument("--version", action="version", version=f"mbr-bench {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in (_add_synth, _add_dataset, _add_embed, _add_run, _add_estimate, _add_leaderboard, _add_predict,
                        _add_ui, _add_dashboard, _add_serve, _add_backbones):
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MbrError as error:
        print(redact(f"mbr-bench: error: {error}"), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("mbr-bench: interrupted; finished cache entries are kept, the unfinished one was discarded",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
