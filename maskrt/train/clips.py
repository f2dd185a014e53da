"""Camera clips with ground-truth face tracks (``shared/tools/make_clips.py``), and the clip
metrics maskrt is judged by (``shared/tools/README.md``, "The clip metrics").

A clip set is ``DIR/clips.json`` (per clip: frames, fps, size, track id -> class),
``DIR/clip_NNN.avi`` and ``DIR/gt/clip_NNN.txt`` (MOTChallenge-style lines
``frame,track_id,x,y,w,h,consider,class,visibility``, frames 1-based). Here frames are 0-based
(``frame_index`` of the records) and boxes are ``[x0, y0, x1, y1]`` with exclusive ends, the
records' convention, so IoU is computed between like boxes. :func:`clip_metrics` computes
CLEAR-MOT with py-motmetrics (``maskrt[clips]``, imported only then) and the per-person figures.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.train.data import DatasetError

#: ground-truth class numbers (make_clips.py); 3 is never "considered"
GT_CLASSES = {1: "with_mask", 2: "without_mask", 3: "mask_worn_incorrectly"}
#: the metric keys of the README, in its order (every one is at the top level of the report)
METRIC_KEYS = ("mota", "idf1", "id_switches", "det_recall", "det_precision",
               "track_decision_acc", "without_mask_track_recall", "label_flicker",
               "pred_tracks_per_person")
_GT_FIELDS = "frame,track_id,x,y,w,h,consider,class,visibility"


@dataclass
class GtFrame:
    """The ground truth of one frame: per box its track id, [x0, y0, x1, y1], whether it is
    considered (else an ignore box), class (1, 2, 3) and visibility."""

    ids: np.ndarray
    boxes: np.ndarray
    consider: np.ndarray
    classes: np.ndarray
    visibility: np.ndarray


@dataclass
class Clip:
    """One clip: its video, frame count, frame rate, (width, height), track id -> class, and
    the ground truth of each 0-based frame index that has boxes."""

    name: str
    video: Path
    frames: int
    fps: float
    size: tuple[int, int]
    tracks: dict[int, int]
    truth: dict[int, GtFrame] = field(default_factory=dict, repr=False)


@dataclass
class ClipSet:
    """A clip set's folder and its clips, sorted by name."""

    root: Path
    clips: list[Clip]

    def __iter__(self) -> Iterator[Clip]:
        return iter(self.clips)

    def by_name(self) -> dict[str, Clip]:
        return {clip.name: clip for clip in self.clips}


def is_clip_set(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a clip set: clips.json, gt/ and at least one .avi."""
    root = Path(path)
    return ((root / "clips.json").is_file() and (root / "gt").is_dir()
            and any(root.glob("*.avi")))


def load_clip_set(path: str | os.PathLike[str]) -> ClipSet:
    """Read clips.json and every clip's ground truth; DatasetError saying what is missing or
    malformed (a missing video, gt file or folder, a bad line)."""
    root = Path(path)
    manifest_path = root / "clips.json"
    if not manifest_path.is_file():
        raise DatasetError(f"{root}: expected a clip set (clips.json, gt/, clip_NNN.avi from "
                           f"make_clips.py), {manifest_path} not found")
    if not (root / "gt").is_dir():
        raise DatasetError(f"{root}: expected the ground-truth folder {root / 'gt'}, not found")
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["clips"]
        if not isinstance(entries, dict) or not entries:
            raise TypeError("no clip")
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{manifest_path}: expected JSON with a non-empty \"clips\" object "
                           f"({err})") from None
    return ClipSet(root, [_load_clip(root, name, entries[name]) for name in sorted(entries)])


def _load_clip(root: Path, name: str, entry: Any) -> Clip:
    video, gt = root / f"{name}.avi", root / "gt" / f"{name}.txt"
    for needed in (video, gt):
        if not needed.is_file():
            raise DatasetError(f"{root / 'clips.json'}: clip {name}: expected {needed}, not found")
    try:
        clip = Clip(name, video, int(entry["frames"]), float(entry["fps"]),
                    (int(entry["size"][0]), int(entry["size"][1])),
                    {int(k): int(v) for k, v in entry["tracks"].items()})
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise DatasetError(f"{root / 'clips.json'}: clip {name}: expected frames, fps, size "
                           f"[w, h] and tracks {{id: class}} ({type(err).__name__}: {err})") from None
    clip.truth = _read_gt(gt)
    return clip


def _read_gt(path: Path) -> dict[int, GtFrame]:
    rows: dict[int, list[list[float]]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split(",")]
            if len(values) != 9 or values[0] < 1:
                raise ValueError(line)
        except ValueError:
            raise DatasetError(f"{path}:{number}: expected {_GT_FIELDS} (frame >= 1), got "
                               f"{line.strip()!r}") from None
        rows.setdefault(int(values[0]) - 1, []).append(values[1:])
    out = {}
    for frame, values in rows.items():
        a = np.asarray(values, np.float64)
        boxes = np.stack([a[:, 1], a[:, 2], a[:, 1] + a[:, 3], a[:, 2] + a[:, 4]], axis=1)
        out[frame] = GtFrame(a[:, 0].astype(np.int64), boxes, a[:, 5] > 0,
                             a[:, 6].astype(np.int64), a[:, 7])
    return out


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a records.jsonl (ValueError naming the line that is not a JSON object)."""
    path = Path(path)
    out = []
    with path.open() as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object (a record), got "
                                 f"{line.strip()[:60]!r}")
            out.append(record)
    return out


def motmetrics_module() -> Any:
    """py-motmetrics, or an ImportError saying how to install it."""
    try:
        import motmetrics
    except ImportError as err:
        raise ImportError(f"clip metrics need py-motmetrics: pip install maskrt[clips] "
                          f"({err})") from err
    return motmetrics


def clip_metrics(records: Iterable[dict[str, Any]], clip_set: ClipSet | str | os.PathLike[str],
                 *, read_frames_only: bool = False) -> dict[str, Any]:
    """The README's clip metrics of ``records`` (dicts of records.jsonl) on ``clip_set``.

    Returns :data:`METRIC_KEYS` (NaN where undefined, e.g. no without_mask track), ``tracked``
    (whether records carried track ids), ``counts``, ``per_clip`` (the same figures per clip)
    and what a gallery shows: ``id_switch_events``, ``wrong_decisions`` and ``false_tracks``
    (predicted tracks matching no annotated face in any frame, longest first; frame_index
    0-based, boxes [x0, y0, x1, y1]). read_frames_only: evaluate a clip only up to the last
    frame it has a record of (a run cut short with --frames) instead of counting frames never
    read as missed.
    Where the README leaves a choice: "seen in >= 5 frames" counts the frames where the gt box
    is considered; a gt track never matched counts as a wrong decision; pred_tracks_per_person
    is the mean over gt tracks matched at least once; flicker pools all tracks' frame pairs.
    """
    mm = motmetrics_module()
    if not isinstance(clip_set, ClipSet):
        clip_set = load_clip_set(clip_set)
    grouped, last_read, foreign = _group(records, clip_set)
    # README: when any record carries a track_id only those count; else every face_score >= 0.5
    tracked = any(r.get("track_id") is not None for rs in grouped.values() for r in rs)
    results, next_id = {}, 1
    for clip in clip_set:
        frames = last_read[clip.name] + 1 if read_frames_only else clip.frames
        preds, decisions, next_id = _predictions(grouped[clip.name], tracked, next_id)
        frames = max([frames, *(f + 1 for f in preds)])  # predictions past the end: false
        if frames > 0:
            results[clip.name] = _evaluate_clip(clip, preds, decisions, frames, mm)
    if not results:
        raise ValueError(f"{clip_set.root}: no record names one of its clips "
                         f"({', '.join(c.name for c in clip_set)}), so no frame to evaluate")
    names = list(results)
    summary = mm.metrics.create().compute_many(
        [results[n]["acc"] for n in names], names=names, generate_overall=True,
        metrics=["mota", "idf1", "num_switches", "recall", "precision", "num_frames",
                 "num_objects", "num_predictions", "num_detections", "num_false_positives",
                 "num_misses"])
    per_clip = {n: _figures(summary.loc[n], results[n]["counts"]) for n in names}
    counts = {k: sum(results[n]["counts"][k] for n in names) for k in results[names[0]]["counts"]}
    report = _figures(summary.loc["OVERALL"], counts)
    report.update(tracked=tracked, records_of_other_sources=foreign, per_clip=per_clip,
                  id_switch_events=[e for n in names for e in results[n]["switches"]],
                  wrong_decisions=[e for n in names for e in results[n]["wrong"]],
                  false_tracks=sorted((e for n in names for e in results[n]["false"]),
                                      key=lambda e: -e["frames"]))
    return report


def _group(records: Iterable[dict[str, Any]], clip_set: ClipSet) -> tuple[dict, dict, int]:
    """Per clip its predictions (scored records with a box and a label) and the last frame it
    has any record of; and how many records named no clip of the set."""
    names = clip_set.by_name()
    grouped: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    last_read = dict.fromkeys(names, -1)
    foreign = 0
    for record in records:
        name = next((Path(str(record[k])).stem for k in ("source_id", "uri")
                     if record.get(k) and Path(str(record[k])).stem in names), None)
        if name is None:
            foreign += 1
            continue
        if not isinstance(record.get("frame_index"), int):
            continue  # not a frame's record (nothing else is written to records.jsonl)
        last_read[name] = max(last_read[name], record["frame_index"])
        if (record.get("status") == "scored" and record.get("box") is not None
                and (record.get("label") or record.get("track_label")) is not None):
            grouped[name].append(record)
    return grouped, last_read, foreign


def _predictions(records: list[dict[str, Any]], tracked: bool, next_id: int
                 ) -> tuple[dict[int, dict[int, dict]], dict[int, dict], int]:
    """frame -> track id -> prediction (box, label: track_label else label), each predicted
    track's last prediction (its decision), and the next free one-frame track id."""
    by_frame: dict[int, dict[int, dict]] = {}
    last: dict[int, dict] = {}
    for r in records:
        if tracked and r.get("track_id") is None:
            continue  # unconfirmed: the tracker did not report it as a person
        if not tracked and (r.get("face_score") is None or r["face_score"] < 0.5):
            continue
        hid = int(r["track_id"]) if tracked else next_id
        next_id += 0 if tracked else 1
        frame = int(r["frame_index"])
        pred = {"frame_index": frame, "track_id": hid, "box": [float(v) for v in r["box"]],
                "label": r.get("track_label") or r.get("label"), "score": r.get("face_score") or 0.0}
        held = by_frame.setdefault(frame, {}).get(hid)
        if held is None or pred["score"] > held["score"]:  # one box per track and frame
            by_frame[frame][hid] = pred
        if hid not in last or frame >= last[hid]["frame_index"]:
            last[hid] = pred
    return by_frame, last, next_id


def _evaluate_clip(clip: Clip, preds: dict[int, dict[int, dict]], decisions: dict[int, dict],
                   frames: int, mm: Any) -> dict[str, Any]:
    """Feed the clip's frames to a MOTAccumulator (after the ignore-box removal), then the
    per-person figures from its matches."""
    from maskrt.train.voc_metric import iou_matrix

    acc = mm.MOTAccumulator(auto_id=False)
    counts = dict.fromkeys(("considered_boxes", "ignore_boxes", "predictions",
                            "removed_on_ignore"), 0)
    kept: dict[int, list[int]] = {}  # predicted track -> frames it was kept (not on ignore)
    for f in range(frames):
        gt = clip.truth.get(f)
        cons = gt.consider if gt is not None else np.zeros(0, bool)
        gt_boxes = gt.boxes if gt is not None else np.zeros((0, 4))
        here = list(preds.get(f, {}).values())
        boxes = np.asarray([p["box"] for p in here], np.float64).reshape(-1, 4)
        iou = iou_matrix(boxes, gt_boxes[cons])
        on_ignore = (iou_matrix(boxes, gt_boxes[~cons]) >= 0.5).any(axis=1)
        keep = ~(on_ignore & ~(iou >= 0.5).any(axis=1))
        # motmetrics' own iou_matrix uses np.asfarray (gone in NumPy 2): NaN = cannot match
        dist = np.where(iou[keep] >= 0.5, 1.0 - iou[keep], np.nan).T
        acc.update(gt.ids[cons].tolist() if gt is not None else [],
                   [p["track_id"] for p, k in zip(here, keep) if k], dist, frameid=f)
        for p in (p for p, k in zip(here, keep) if k):
            kept.setdefault(p["track_id"], []).append(f)
        counts["considered_boxes"] += int(cons.sum())
        counts["ignore_boxes"] += int((~cons).sum())
        counts["predictions"] += len(here)
        counts["removed_on_ignore"] += int((~keep).sum())
    counts["frames"] = frames
    events = acc.mot_events
    hits = events[events["Type"].isin(["MATCH", "SWITCH"])]
    matched: dict[int, list[tuple[int, int, bool]]] = {}
    for (frame, _), kind, oid, hid in zip(hits.index, hits["Type"], hits["OId"], hits["HId"]):
        matched.setdefault(int(oid), []).append((int(frame), int(hid), kind == "SWITCH"))
    out = _people(clip, matched, preds, decisions, frames)
    out["false"] = _false_tracks(clip, kept, set(hits["HId"].astype(int)), preds)
    counts["false_tracks"] = len(out["false"])
    out["counts"].update(counts)
    out["acc"] = acc
    return out


def _false_tracks(clip: Clip, kept: dict[int, list[int]], matched: set[int],
                  preds: dict[int, dict[int, dict]]) -> list[dict[str, Any]]:
    """The predicted tracks that match no considered gt box in any frame (a thing that is not
    a face, or a face the annotations leave out), each with its first and middle frame."""
    out = []
    for hid, frames in kept.items():
        if hid in matched:
            continue
        f = frames[len(frames) // 2]
        out.append({"clip": clip.name, "track_id": hid, "frames": len(frames), "frame_index": f,
                    "box": preds[f][hid]["box"], "label": preds[f][hid]["label"],
                    "first_frame_index": frames[0], "first_box": preds[frames[0]][hid]["box"],
                    "face_score": max(preds[g][hid]["score"] for g in frames)})
    return out


def _people(clip: Clip, matched: dict[int, list[tuple[int, int, bool]]],
            preds: dict[int, dict[int, dict]], decisions: dict[int, dict],
            frames: int) -> dict[str, Any]:
    """Per considered gt track: label flicker over its matched frames, the distinct predicted
    tracks matched to it, its identity switches, and (seen in >= 5 frames) the decision."""
    seen: dict[int, list[int]] = {}
    for f in sorted(f for f in clip.truth if f < frames):
        for oid in clip.truth[f].ids[clip.truth[f].consider]:
            seen.setdefault(int(oid), []).append(f)
    c = Counter({k: 0 for k in ("gt_tracks", "decided_tracks", "right_decisions",
                                "without_mask_tracks", "without_mask_found", "flicker_pairs",
                                "flicker_changes", "matched_tracks", "pred_tracks_matched")})
    switches, wrong = [], []
    for oid, where in sorted(seen.items()):
        hits = matched.get(oid, [])
        labels = [preds[f][h]["label"] for f, h, _ in hits]
        c["gt_tracks"] += 1
        c["flicker_pairs"] += max(len(labels) - 1, 0)
        c["flicker_changes"] += sum(a != b for a, b in zip(labels, labels[1:]))
        c["matched_tracks"] += bool(hits)
        c["pred_tracks_matched"] += len({h for _, h, _ in hits})
        for (f0, h0, _), (f, h, switch) in zip(hits, hits[1:]):
            if switch:
                switches.append({"clip": clip.name, "frame_index": f, "gt_id": oid,
                                 "previous_track_id": h0, "track_id": h, "box": preds[f][h]["box"],
                                 "previous_frame_index": f0, "previous_box": preds[f0][h0]["box"]})
        if len(where) < 5:
            continue  # README: decisions are judged on gt tracks seen in >= 5 frames
        gt_class = GT_CLASSES[clip.tracks.get(oid) or int(_gt_row(clip, oid, where[0])[1])]
        decision = _decision(clip, oid, hits, where, preds, decisions)
        right = decision["predicted"] == gt_class
        c["decided_tracks"] += 1
        c["right_decisions"] += right
        c["without_mask_tracks"] += gt_class == "without_mask"
        c["without_mask_found"] += right and gt_class == "without_mask"
        if not right:
            wrong.append({"clip": clip.name, "gt_id": oid, "gt_class": gt_class, **decision})
    return {"counts": dict(c), "switches": switches, "wrong": wrong}


def _decision(clip: Clip, oid: int, hits: list[tuple[int, int, bool]], where: list[int],
              preds: dict[int, dict[int, dict]], decisions: dict[int, dict]) -> dict[str, Any]:
    """The decision for a gt track: that of the predicted track matched to it in most frames
    (ties: the one matched last, the one a viewer sees now), with a frame and box where it was
    matched and where it decided; no prediction and frames of the gt box when never matched."""
    if not hits:
        f = where[len(where) // 2]
        return {"predicted": None, "track_id": None, "frame_index": f,
                "box": _gt_row(clip, oid, f)[0], "decision_frame_index": where[-1],
                "decision_box": _gt_row(clip, oid, where[-1])[0], "matched_frames": 0}
    count = Counter(h for _, h, _ in hits)
    last_at = {h: f for f, h, _ in hits}
    best = max(count, key=lambda h: (count[h], last_at[h]))
    mine = [f for f, h, _ in hits if h == best]
    f = mine[len(mine) // 2]
    last = decisions[best]
    return {"predicted": last["label"], "track_id": best, "frame_index": f,
            "box": preds[f][best]["box"], "decision_frame_index": last["frame_index"],
            "decision_box": last["box"], "matched_frames": count[best]}


def _gt_row(clip: Clip, oid: int, frame: int) -> tuple[list[float], int]:
    """The box and class of gt track ``oid`` in ``frame``."""
    gt = clip.truth[frame]
    k = np.flatnonzero(gt.ids == oid)[0]
    return [float(v) for v in gt.boxes[k]], int(gt.classes[k])


def _figures(row: Any, counts: dict[str, int]) -> dict[str, Any]:
    """The README's figures from a motmetrics summary row and our counts."""
    def ratio(a: str, b: str) -> float:
        return counts[a] / counts[b] if counts[b] else float("nan")

    return {"mota": float(row["mota"]), "idf1": float(row["idf1"]),
            "id_switches": int(row["num_switches"]), "det_recall": float(row["recall"]),
            "det_precision": float(row["precision"]),
            "track_decision_acc": ratio("right_decisions", "decided_tracks"),
            "without_mask_track_recall": ratio("without_mask_found", "without_mask_tracks"),
            "label_flicker": ratio("flicker_changes", "flicker_pairs"),
            "pred_tracks_per_person": ratio("pred_tracks_matched", "matched_tracks"),
            "counts": {**counts, "matched_boxes": int(row["num_detections"]),
                       "false_positives": int(row["num_false_positives"]),
                       "misses": int(row["num_misses"])}}
