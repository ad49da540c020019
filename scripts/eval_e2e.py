#!/usr/bin/env python3
"""End-to-end performance and accuracy of one sample on the simulated analyzer.

For each cell library and seed, a child process runs one sample through the daemon's
own service (``agent.daemon.oneshot``, as ``algocyte-agent demo`` does) with the
embedded simulator configuration: DEFAULT controller timing, the shipped models,
target 200 white cells, MQTT off. Reported per run:

* wall time of the sample and its split (acquisition / analysis / waiting, as in the
  report) plus the scanner's finer split (survey, calibration, moving, capturing,
  image processing, producer blocked on a full queue) and homing;
* the child's peak resident memory (ru_maxrss) right after the sample;
* the differential against ``truth`` (the slide's cells centred in the analysed
  fields), per class, with the 3-percentage-point criterion;
* why they differ: every counted cell is matched to the slide object it sits on,
  giving the classifier's confusion on these composited cells, the detector's
  misses, false detections and cells never seen whole (cut by a field border).

Usage::

    flock /tmp/algocyte-train.lock .venv/bin/python scripts/eval_e2e.py \
        [--seeds 1 2 3] [--libraries demo ../shared/data/pbc/val] [--target 200] [--json out.json]

``flock`` keeps model training off the two cores while the timing is measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WBC = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil", "ig")
MATCH_UM = 4.0
"""A counted cell is the slide object whose centre lies within this of its box centre (um),
or within 0.6 of the object's radius if that is larger."""
MAX_MINUTES = 5.0
MAX_DIFF_PP = 3.0


# ----------------------------------------------------------------------------- child


def child(
    seed: int, cells: str | None, target: int, state_dir: Path, external_sim: bool
) -> dict[str, Any]:
    from agent.config import default_config
    from agent.daemon.oneshot import run_one_sample
    from agent.transport.commands import StartSampleArgs

    base = default_config()
    data = base.model_dump(mode="python")
    data["simulator"]["seed"] = seed
    data["simulator"]["cell_library"] = cells
    sim_config = type(base).model_validate(data).simulator
    data["storage"]["state_dir"] = state_dir
    data["mqtt"]["enabled"] = False
    data["acquisition"]["target_wbc"] = target
    sim: subprocess.Popen[str] | None = None
    if external_sim:
        # The simulator in a process of its own, as a real board's hardware would be:
        # this process's memory is then the daemon's alone.
        command = [str(Path(sys.executable).parent / "algocyte-agent"), "sim", "--json"]
        command += ["--seed", str(seed)] + (["--cells", cells] if cells else [])
        sim = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert sim.stdout is not None
        where = json.loads(sim.stdout.readline())
        data["simulator"] = None
        data["stage"]["port"] = where["stage_port"]
        data["camera"]["device"] = where["camera"]
    config = type(base).model_validate(data)
    sample_id = f"EVAL-{seed}"
    started = time.monotonic()
    try:
        result = run_one_sample(config, StartSampleArgs(sample_id=sample_id))
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(30)
    wall = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    outcome = result.outcome
    if outcome is None or outcome.scan is None:
        raise SystemExit("the sample did not produce a scan")
    report = outcome.report
    t = outcome.scan.timing
    out: dict[str, Any] = {
        "seed": seed,
        "library": cells or "demo",
        "status": report.status,
        "reason": report.reason,
        "stop_reason": outcome.scan.stop_reason,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "timings": report.timings.model_dump(),
        "homing_s": round(outcome.homing_s, 2),
        "scan": {
            "total_s": round(t.total_s, 1),
            "survey_s": round(t.survey_s, 1),
            "calibration_s": round(t.calibration_s, 1),
            "moving_s": round(t.moving_s, 1),
            "capturing_s": round(t.capturing_s, 1),
            "processing_s": round(t.processing_s, 1),
            "queue_full_s": round(t.waiting_s, 1),
            "analysis_wait_s": round(t.analysis_wait_s, 1),
            "images": t.images,
            "fields_captured": len(outcome.scan.fields),
            "fields_analysed": len(outcome.scan.analysed),
        },
        "wbc_counted": report.wbc_counted,
        "unidentified": report.unidentified,
        "edge_cells_skipped": report.edge_cells_skipped,
        "duplicates_merged": report.duplicates_merged,
        "fields": report.fields,
        "percent": {c: report.differential[c].percent for c in WBC} if report.differential else {},
        "counts": {c: report.differential[c].count for c in WBC} if report.differential else {},
        "simulator": "own process" if external_sim else "in-process",
        "models": [
            f"{m.name} {m.version} sha256 {m.sha256[:12]}" for m in report.provenance.models
        ],
    }
    out["diagnosis"] = diagnose(config, sim_config, sample_id)
    if report.truth is not None and report.truth != out["diagnosis"]["truth"]:
        raise SystemExit(f"report truth {report.truth} != recomputed {out['diagnosis']['truth']}")
    return out


def diagnose(config: Any, sim_config: Any, sample_id: str) -> dict[str, Any]:
    """Match the counted cells to the slide's objects (the simulator's ground truth)."""
    from agent.report.store import SampleStore
    from drivers.sim.slide import VirtualSlide
    from drivers.sim.smear import Rect

    store = SampleStore(config.storage.state_dir, config.device_id)
    try:
        cells = store.cells(sample_id)
        fields = store.fields(sample_id)
    finally:
        store.close()
    slide = VirtualSlide(sim_config)
    bounds = [f.slide_bounds() for f in fields]
    truth: dict[str, Any] = {}
    for b in bounds:
        for obj in slide.cells_in(Rect(*b)):
            truth[obj.id] = obj

    def whole(obj: Any) -> bool:
        r = obj.radius_um
        return any(
            b[0] <= obj.x_um - r
            and obj.x_um + r <= b[2]
            and b[1] <= obj.y_um - r
            and obj.y_um + r <= b[3]
            for b in bounds
        )

    pairs = []
    for c in cells:
        for obj in truth.values():
            d = math.hypot(obj.x_um - c.x_um, obj.y_um - c.y_um)
            if d <= max(MATCH_UM, 0.6 * obj.radius_um):
                pairs.append((d, c.cell_id, obj.id))
    pairs.sort()
    cell_to_obj: dict[int, str] = {}
    used: set[str] = set()
    for _, cell_id, obj_id in pairs:
        if cell_id in cell_to_obj or obj_id in used:
            continue
        cell_to_obj[cell_id] = obj_id
        used.add(obj_id)
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    false_detections: Counter[str] = Counter()
    for c in cells:
        obj_id = cell_to_obj.get(c.cell_id)
        if obj_id is None:
            false_detections[c.label] += 1
        else:
            confusion[truth[obj_id].cls][c.label] += 1
    offsets = sorted(
        math.hypot(truth[o].x_um - c.x_um, truth[o].y_um - c.y_um)
        for c in cells
        if (o := cell_to_obj.get(c.cell_id)) is not None
    )
    source = source_image_calls(
        slide, [(c, truth[cell_to_obj[c.cell_id]]) for c in cells if c.cell_id in cell_to_obj]
    )
    missed_whole: Counter[str] = Counter()
    missed_cut: Counter[str] = Counter()
    whole_truth: Counter[str] = Counter()
    for obj in truth.values():
        if whole(obj):
            whole_truth[obj.cls] += 1
        if obj.id in used:
            continue
        (missed_whole if whole(obj) else missed_cut)[obj.cls] += 1
    return {
        "truth": dict(Counter(obj.cls for obj in truth.values())),
        "confusion": {k: dict(v) for k, v in sorted(confusion.items())},
        "false_detections": dict(false_detections),
        "missed_whole": dict(missed_whole),
        "missed_cut": dict(missed_cut),
        "whole_truth": dict(whole_truth),
        "centre_offset_um": {
            "median": round(offsets[len(offsets) // 2], 2) if offsets else None,
            "p95": round(offsets[int(0.95 * (len(offsets) - 1))], 2) if offsets else None,
        },
        "source": source,
    }


def source_image_calls(slide: Any, matched: list[tuple[Any, Any]]) -> dict[str, Any]:
    """The classifier on the library images the slide's cells were drawn from.

    A cell wrong on the slide but right on its source image is a compositing/imaging
    effect (rotation, the camera model, neighbouring cells, crop centring); wrong on
    both, it is the classifier's own error on that cell.
    """
    import cv2

    from agent.vision.classifier import CellClassifier

    classifier = CellClassifier.load(None, 0)
    wbc = [(c, obj) for c, obj in matched if obj.cls in WBC]
    images = [cv2.imread(str(slide.source_of(obj)), cv2.IMREAD_COLOR) for _, obj in wbc]
    calls = classifier.classify(images, slide.config.cell_library_pixel_size_um)
    right_source = sum(
        1 for (_, obj), call in zip(wbc, calls, strict=True) if call.label == obj.cls
    )
    right_slide = sum(1 for c, obj in wbc if c.label == obj.cls)
    only_on_slide: Counter[str] = Counter()
    on_both: Counter[str] = Counter()
    for (c, obj), call in zip(wbc, calls, strict=True):
        if c.label == obj.cls:
            continue
        key = f"{obj.cls}->{c.label}"
        (on_both if call.label != obj.cls else only_on_slide)[key] += 1
    return {
        "cells": len(wbc),
        "right_on_slide": right_slide,
        "right_on_source": right_source,
        "wrong_only_on_slide": dict(only_on_slide),
        "wrong_on_source_too": dict(on_both),
    }


# ---------------------------------------------------------------------------- parent


def percent(counts: dict[str, int]) -> dict[str, float]:
    n = sum(counts.get(c, 0) for c in WBC)
    return {c: (100.0 * counts.get(c, 0) / n if n else 0.0) for c in WBC}


def print_run(r: dict[str, Any]) -> bool:
    t = r["timings"]
    s = r["scan"]
    ok_time = t["total_s"] < MAX_MINUTES * 60 and r["status"] != "aborted"
    print(
        f"\n== library {r['library']}, seed {r['seed']}: {r['status']}, {r['wbc_counted']} white cells "
        f"(+{r['unidentified']} unidentified) in {r['fields']} fields, stop: {r['stop_reason']}"
    )
    print(f"   models: {', '.join(r['models'])}")
    print(
        f"   sample {t['total_s']:.1f} s [{'PASS' if ok_time else 'FAIL'} < {MAX_MINUTES:g} min]: "
        f"acquisition {t['acquisition_s']:.1f} s, analysis {t['analysis_s']:.1f} s, "
        f"waiting for fields {t['waiting_s']:.1f} s; peak RSS {r['peak_rss_mb']:.0f} MB "
        f"(simulator {r['simulator']})"
    )
    print(
        f"   scanner: homing {r['homing_s']:.1f} s, survey {s['survey_s']:.1f} s, "
        f"calibration {s['calibration_s']:.1f} s, moving {s['moving_s']:.1f} s, capturing "
        f"{s['capturing_s']:.1f} s ({s['images']} images), image processing {s['processing_s']:.1f} s, "
        f"blocked on a full queue {s['queue_full_s']:.1f} s; {s['fields_analysed']} of "
        f"{s['fields_captured']} fields analysed"
    )
    truth_pct = percent(r["diagnosis"]["truth"])
    whole_pct = percent(r["diagnosis"]["whole_truth"])
    ok_acc = bool(r["percent"])
    print(f"   {'class':<12}{'count':>6}{'report%':>9}{'truth%':>8}{'diff':>7}{'whole%':>8}")
    for c in WBC:
        p = r["percent"].get(c)
        diff = (p - truth_pct[c]) if p is not None else float("nan")
        bad = not abs(diff) <= MAX_DIFF_PP
        ok_acc = ok_acc and not bad
        print(
            f"   {c:<12}{r['counts'].get(c, 0):>6}{(p or 0):>9.1f}{truth_pct[c]:>8.1f}"
            f"{diff:>+7.1f}{whole_pct[c]:>8.1f}{'  <-- over 3 pp' if bad else ''}"
        )
    print(f"   differential within {MAX_DIFF_PP:g} pp of truth: {'PASS' if ok_acc else 'FAIL'}")
    d = r["diagnosis"]
    print("   classifier on these cells (truth -> counted labels):")
    for cls, row in d["confusion"].items():
        n = sum(row.values())
        right = row.get(cls, 0)
        others = ", ".join(
            f"{k} {v}" for k, v in sorted(row.items(), key=lambda kv: -kv[1]) if k != cls
        )
        print(f"     {cls:<12} {right}/{n} right" + (f"; {others}" if others else ""))
    src = d["source"]
    print(
        f"   same white cells classified from their library source images: {src['right_on_source']}"
        f"/{src['cells']} right (on the slide {src['right_on_slide']}/{src['cells']}); slide errors "
        f"also made on the source image: {src['wrong_on_source_too'] or 'none'}; made only on the "
        f"slide: {src['wrong_only_on_slide'] or 'none'}"
    )
    off = d["centre_offset_um"]
    print(
        f"   detected centre vs true centre: median {off['median']} um, 95th percentile {off['p95']} um"
    )
    print(f"   detections matching no slide object: {d['false_detections'] or 'none'}")
    print(f"   slide objects not counted though whole in a field: {d['missed_whole'] or 'none'}")
    print(f"   slide objects never whole in an analysed field (cut): {d['missed_cut'] or 'none'}")
    return ok_time and ok_acc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--libraries",
        nargs="+",
        default=["demo", str(ROOT.parent / "shared" / "data" / "pbc" / "val")],
        help="'demo' (the shipped demo library) or cell-library folders",
    )
    parser.add_argument("--target", type=int, default=200)
    parser.add_argument(
        "--external-sim",
        action="store_true",
        help="run the simulator as its own process ('algocyte-agent sim'): the peak memory is "
        "then the daemon's alone, as on a board",
    )
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    if args.child:
        spec = json.loads(args.child)
        result = child(
            spec["seed"], spec["cells"], spec["target"], Path(spec["state_dir"]), spec["external"]
        )
        sys.stdout.write(json.dumps(result) + "\n")
        return 0

    print(
        f"eval_e2e: {os.cpu_count()} CPU cores, target {args.target}, DEFAULT controller timing, "
        f"shipped models; seeds {args.seeds}; simulator "
        f"{'in its own process' if args.external_sim else 'in-process'}"
    )
    runs = []
    all_ok = True
    for library in args.libraries:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix="eval-e2e-") as state:
                spec = {
                    "seed": seed,
                    "cells": None if library == "demo" else library,
                    "target": args.target,
                    "state_dir": state,
                    "external": args.external_sim,
                }
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    timeout=900,
                )
            if proc.returncode != 0:
                print(f"\n== library {library}, seed {seed}: FAILED\n{proc.stderr[-3000:]}")
                all_ok = False
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            runs.append(r)
            all_ok = print_run(r) and all_ok
            sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2), encoding="utf-8")
    print(f"\noverall: {'PASS' if all_ok else 'FAIL'}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
