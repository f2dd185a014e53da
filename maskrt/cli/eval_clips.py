"""``maskrt eval CLIPS_DIR``: the clip metrics of ``shared/tools/README.md`` (CLEAR-MOT, IDF1,
per-person decisions, label flicker) on a clip set made by ``make_clips.py``. The clips are
scored here through the streaming pipeline (faces, tracking, classification), or an existing
records.jsonl is evaluated (``--records``). Kept apart from eval.py, which does folders and VOC
splits, so that each stays readable."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from maskrt.cli.common import add_track_arguments, positive_int

#: gallery caption colours (BGR)
SWITCH_COLOUR, DECISION_COLOUR, FALSE_COLOUR = (0, 140, 255), (200, 0, 160), (0, 0, 220)
COLOURS = {"switch": SWITCH_COLOUR, "decision": DECISION_COLOUR, "false": FALSE_COLOUR}
#: the gallery's kinds, in its order, and the report's lists behind them
GALLERY_KINDS = {"switch": "id_switch_events", "decision": "wrong_decisions",
                 "false": "false_tracks"}


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    from maskrt.detect import PRESETS

    group = parser.add_argument_group("clip sets (CLIPS_DIR made by make_clips.py: clips.json, "
                                      "gt/, clip_NNN.avi)")
    group.add_argument("--records", type=Path, default=None, metavar="FILE",
                       help="evaluate this records.jsonl (maskrt score on the clips) instead of "
                            "scoring the clips")
    group.add_argument("--records-out", type=Path, default=None, metavar="FILE",
                       help="also write the records of the run here (JSON lines)")
    group.add_argument("--preset", choices=sorted(PRESETS), default="default",
                       help="face detection preset, also for VOC scene splits (default "
                            "%(default)s)")
    group.add_argument("--face-option", action="append", default=[], metavar="KEY=VALUE",
                       help="override a preset setting, repeatable: score_threshold, nms_iou, "
                            "upscale, widen, min_face, max_faces, report_threshold (on a scene "
                            "split: the operating point's), ...")
    group.add_argument("--frames", dest="max_frames", type=positive_int, default=None,
                       metavar="N", help="stop reading after N frames in all; each clip is then "
                       "evaluated up to its last frame read")
    add_track_arguments(group)  # type: ignore[arg-type]  # a group adds arguments alike


def looks_like_clips(data_dir: str) -> bool:
    """A clip set, or a folder meant as one (clips.json) whose problem load_clip_set names."""
    from maskrt.train.clips import is_clip_set

    return is_clip_set(data_dir) or Path(data_dir, "clips.json").is_file()


def main_clips(args: argparse.Namespace) -> int:
    from maskrt.cli.common import fail
    from maskrt.train.clips import clip_metrics, load_clip_set, motmetrics_module, read_records

    try:
        clip_set = load_clip_set(args.data_dir)
        motmetrics_module()  # missing: say so before a long run, not after it
        if args.records is not None:
            records, run = read_records(args.records), {}
        else:
            records, run = _score(args, clip_set)
        report = clip_metrics(records, clip_set,
                              read_frames_only=args.records is None and args.max_frames is not None)
    except (ValueError, OSError, ImportError) as err:
        return fail("eval", err, args, prefix="error: ")
    report["frames_per_s"] = run.get("frames_per_s")
    report["classified_faces"] = classified_faces(records)
    report["classified_per_frame"] = report["classified_faces"] / max(1, report["counts"]["frames"])
    report["settings"] = _settings(args, clip_set, run)
    print(format_clip_summary(report, clip_set, run))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_jsonable(report), indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.gallery:
        shown = draw_clip_gallery(report, clip_set, args.gallery, limit=args.gallery_max)
        print(f"wrote {args.gallery} ({shown} shown; {_gallery_counts(report)})")
    return 0


def _score(args: argparse.Namespace, clip_set: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score every clip through the pipeline; its records and the run's figures (ValueError:
    a bad option, or an engine that cannot run here)."""
    from maskrt.cli.common import open_engine, track_kwargs
    from maskrt.detect import parse_face_options
    from maskrt.stream.pipeline import Pipeline

    face_options = parse_face_options(args.face_option)
    tracking = track_kwargs(args)
    engine, untrained = open_engine(args, chunk_size=args.batch_size)
    if untrained:
        print("maskrt eval: WARNING: no trained weights in this build; a RANDOMLY INITIALISED "
              "model is scoring, so the decisions are meaningless", file=sys.stderr)
    with engine:
        pipeline = Pipeline(engine, [str(clip.video) for clip in clip_set],
                            batch_size=args.batch_size, preset=args.preset,
                            face_options=face_options, max_frames=args.max_frames, **tracking)
        records, scored, seconds = _consume(pipeline, args, sum(c.frames for c in clip_set))
        backend = engine.backend.describe()
    return records, {"frames_per_s": scored / seconds if seconds > 0 else None,
                     "scored_frames": scored, "wall_s": round(seconds, 3), "backend": backend,
                     "face_options": face_options, "track_options": tracking["track_options"]}


def classified_faces(records: list[dict[str, Any]]) -> int:
    """How many faces went through the classifier: the cost temporal reuse saves, and unlike
    frames/s the same on any machine (records of an untracked run have no ``classified``:
    every face with a label was classified)."""
    return sum(1 for r in records if r.get("status") == "scored" and r.get("box") is not None
               and r.get("classified", r.get("label") is not None))


def _consume(pipeline: Any, args: argparse.Namespace,
             total: int) -> tuple[list[dict[str, Any]], int, float]:
    """Every record of the run (also written to --records-out), the frames scored, and the wall
    seconds from the start of the pipeline (models already loaded) to its last record."""
    from tqdm import tqdm

    records: list[dict[str, Any]] = []
    scored = 0
    with contextlib.ExitStack() as stack:
        out = None
        if args.records_out is not None:
            args.records_out.parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(args.records_out.open("w"))
        bar = stack.enter_context(tqdm(total=min(total, args.max_frames or total), unit="frame",
                                       disable=args.no_progress, file=sys.stderr))
        start = time.perf_counter()
        with pipeline:
            for record in pipeline:
                row = record.to_dict()
                records.append(row)
                if out is not None:
                    out.write(json.dumps(row) + "\n")
                if record.frame_level:
                    bar.update(1)
                    scored += record.status == "scored"
        seconds = time.perf_counter() - start
    return records, scored, seconds


def _settings(args: argparse.Namespace, clip_set: Any, run: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = {"clips": str(clip_set.root),
                                "records": str(args.records) if args.records else None}
    if args.records is None:
        settings.update(model=str(args.model) if args.model else "shipped",
                        backend=run.get("backend"), preset=args.preset,
                        face_options=run.get("face_options"), track=args.track,
                        reuse=args.reuse == "on", track_options=run.get("track_options"),
                        batch_size=args.batch_size, frames=args.max_frames)
    return settings


def _jsonable(value: Any) -> Any:
    """NaN (a figure over nothing) as null: JSON has no NaN."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# the printed summary


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_clip_summary(report: dict[str, Any], clip_set: Any, run: dict[str, Any]) -> str:
    c = report["counts"]
    mode = ("tracks: the records' track_id" if report["tracked"]
            else "no track_id: each face_score >= 0.5 is a one-frame track")
    lines = [f"{clip_set.root}: {len(report['per_clip'])} clips, {c['frames']} frames, "
             f"{c['gt_tracks']} people ({c['considered_boxes']} faces counted, "
             f"{c['ignore_boxes']} ignored); {c['predictions']} predictions ({mode})",
             f"mota                       {_num(report['mota'])}",
             f"idf1                       {_num(report['idf1'])}",
             f"id_switches                {report['id_switches']}",
             f"det_recall                 {_num(report['det_recall'])}   "
             f"({c['matched_boxes']}/{c['considered_boxes']} faces found)",
             f"det_precision              {_num(report['det_precision'])}   "
             f"({c['false_positives']} false, {c['removed_on_ignore']} on ignore boxes removed)",
             f"false_tracks               {c['false_tracks']}   (tracks matching no annotated "
             f"face in any frame: not a face, or one the annotations leave out)",
             f"track_decision_acc         {_num(report['track_decision_acc'])}   "
             f"({c['right_decisions']}/{c['decided_tracks']} people seen in >= 5 frames)",
             f"without_mask_track_recall  {_num(report['without_mask_track_recall'])}   "
             f"({c['without_mask_found']}/{c['without_mask_tracks']})",
             f"label_flicker              {_num(report['label_flicker'])}   "
             f"({c['flicker_changes']}/{c['flicker_pairs']} consecutive matched frames)",
             f"pred_tracks_per_person     {_num(report['pred_tracks_per_person'], 2)}   "
             f"({c['pred_tracks_matched']} tracks / {c['matched_tracks']} people found)"]
    lines.append(f"classifier: {report['classified_faces']} faces classified "
                 f"({report['classified_per_frame']:.2f} a frame)")
    if run.get("frames_per_s") is not None:
        lines.append(f"speed: {run['frames_per_s']:.1f} frames/s ({run['scored_frames']} frames "
                     f"scored in {run['wall_s']:.1f} s, models loaded before; {run['backend']})")
    lines.append(f"{'clip':12s}{'frames':>7s}{'mota':>7s}{'idf1':>7s}{'switch':>7s}"
                 f"{'recall':>7s}{'prec':>7s}{'decide':>7s}{'wm_rec':>7s}{'flick':>7s}"
                 f"{'trk/p':>7s}")
    for name, m in report["per_clip"].items():
        lines.append(f"{name:12s}{m['counts']['frames']:>7d}{_num(m['mota']):>7s}"
                     f"{_num(m['idf1']):>7s}{m['id_switches']:>7d}{_num(m['det_recall']):>7s}"
                     f"{_num(m['det_precision']):>7s}{_num(m['track_decision_acc']):>7s}"
                     f"{_num(m['without_mask_track_recall']):>7s}"
                     f"{_num(m['label_flicker']):>7s}{_num(m['pred_tracks_per_person'], 2):>7s}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the gallery: identity switches (the face under both ids), wrong decisions and false tracks


def draw_clip_gallery(report: dict[str, Any], clip_set: Any, path: Path,
                      limit: int | None = 64) -> int:
    """A PNG of identity switches (left: the face under its previous track id, right: under the
    new one), wrong track decisions (left: a frame where the track was matched, right: where
    it last decided) and false tracks (the longest first; its first and middle frame), at most
    ``limit`` (0 or None: all); returns how many are shown."""
    from maskrt.train.evaluate import _face_tile, write_gallery

    items = _pick(report, limit)
    wanted: dict[str, set[int]] = {}
    for _, e, shots in items:
        wanted.setdefault(e["clip"], set()).update(f for f, _ in shots)
    clips = clip_set.by_name()
    frames = {(name, f): image for name, fs in wanted.items()
              for f, image in _read_frames(clips[name].video, fs).items()}
    cells = []
    for kind, e, shots in items:
        colour = COLOURS[kind]
        tiles = [_face_tile(_frame(frames, e["clip"], f, clips), box, colour) for f, box in shots]
        cells.append((_caption(kind, e, colour), *tiles))
    total = sum(len(report[key]) for key in GALLERY_KINDS.values())
    write_gallery(path, cells, _gallery_counts(report)
                  + (f" (first {len(items)})" if len(items) < total else ""))
    return len(items)


def _gallery_counts(report: dict[str, Any]) -> str:
    return (f"{len(report['id_switch_events'])} identity switches, "
            f"{len(report['wrong_decisions'])} wrong decisions, "
            f"{len(report['false_tracks'])} false tracks")


def _pick(report: dict[str, Any], limit: int | None) -> list[tuple[str, dict, list]]:
    """Every kind shown when it exists: the limit shared in turn, what one kind leaves to the
    others; each item with its two shots (frame, box)."""
    groups = {kind: list(report[key]) for kind, key in GALLERY_KINDS.items()}
    groups["decision"].sort(key=lambda e: e["predicted"] is None)  # wrong labels before misses
    take = dict.fromkeys(groups, 0)
    left = sum(map(len, groups.values())) if not limit else limit
    while left > 0 and any(take[k] < len(g) for k, g in groups.items()):
        for kind, group in groups.items():
            if left > 0 and take[kind] < len(group):
                take[kind] += 1
                left -= 1
    return [(kind, e, _shots(kind, e)) for kind, group in groups.items()
            for e in group[:take[kind]]]


def _shots(kind: str, e: dict[str, Any]) -> list[tuple[int, Any]]:
    if kind == "switch":
        return [(e["previous_frame_index"], e["previous_box"]), (e["frame_index"], e["box"])]
    if kind == "decision":
        return [(e["frame_index"], e["box"]), (e["decision_frame_index"], e["decision_box"])]
    return [(e["first_frame_index"], e["first_box"]), (e["frame_index"], e["box"])]


def _caption(kind: str, e: dict[str, Any], colour: tuple[int, int, int]) -> list[tuple]:
    from maskrt.train.evaluate import BLACK, GREY

    if kind == "false":
        return [(f"false track {e['track_id']}: {e['label']}", colour),
                (f"{e['frames']} frames, best score {e['face_score']:.2f}", BLACK),
                (f"{e['clip']} frame {e['frame_index']}", GREY)]
    if kind == "switch":
        return [(f"id switch: track {e['previous_track_id']} -> {e['track_id']}", colour),
                (f"person {e['gt_id']}, frames {e['previous_frame_index']} -> "
                 f"{e['frame_index']}", BLACK), (e["clip"], GREY)]
    where = f"{e['clip']} frames {e['frame_index']}, {e['decision_frame_index']}"
    if e["predicted"] is None:
        return [(f"{e['gt_class']}: never tracked", colour),
                (f"person {e['gt_id']}: no confirmed track", BLACK), (where, GREY)]
    return [(f"{e['gt_class']} decided {e['predicted']}", colour),
            (f"person {e['gt_id']}, track {e['track_id']} ({e['matched_frames']} fr)", BLACK),
            (where, GREY)]


def _read_frames(video: Path, wanted: set[int]) -> dict[int, Any]:
    """The frames of ``video`` with these 0-based indices, read in order (no seeking, which
    MJPG in AVI does not promise to do exactly)."""
    import cv2

    out: dict[int, Any] = {}
    cap = cv2.VideoCapture(str(video))
    try:
        for index in range(max(wanted) + 1 if wanted else 0):
            ok, image = cap.read()
            if not ok:
                break
            if index in wanted:
                out[index] = image
    finally:
        cap.release()
    return out


def _frame(frames: dict, clip: str, index: int, clips: dict[str, Any]) -> Any:
    """The frame read, or a grey one of the clip's size where the video ended early."""
    import numpy as np

    if (clip, index) in frames:
        return frames[(clip, index)]
    width, height = clips[clip].size
    return np.full((height, width, 3), 128, np.uint8)
