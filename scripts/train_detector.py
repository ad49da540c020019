#!/usr/bin/env python3
"""Train the white-cell detector from scratch, quantise it to INT8 and write its card.

    flock /tmp/algocyte-train.lock .venv/bin/python scripts/train_detector.py

Data: BCCD real fields (train split only; the hash-chosen validation split is never
trained on) and, when the virtual slide is available, simulated fields rendered from
it (cached under /tmp/algocyte-detector, never committed). Runs on the CPU with 2 torch
threads (about 15 minutes here). Writes ``models/detector.int8.onnx`` (shipped),
``models/detector.fp32.onnx`` (its FP32 twin, for comparisons), ``models/detector.card.json``
and ``models/detector.md``; ``scripts/eval_detector.py`` measures them again.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import detector_sim  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from detector_data import (  # noqa: E402
    MODEL_PIXEL_SIZE_UM,
    NORM_MEAN,
    NORM_STD,
    STRIDE,
    LabelledField,
    augmented_tile,
    encode_targets,
    load_bccd,
)
from detector_eval import count, run_detector  # noqa: E402
from detector_net import DetectorNet, fuse_batch_norms  # noqa: E402
from detector_sim import TRAIN_FIELDS, TRAIN_RBC_PER_WBC  # noqa: E402
from eval_detector import evaluate  # noqa: E402
from model_export import (  # noqa: E402
    ArrayCalibrationReader,
    export_onnx,
    quantize_int8,
    write_card,
    write_card_markdown,
)

from agent.vision.detector import MODEL_NAME, CellDetector  # noqa: E402
from agent.vision.model_card import ModelCard, file_sha256, load_card  # noqa: E402
from agent.vision.runtime import session_options  # noqa: E402

_log = logging.getLogger("train_detector")

VERSION = "1.0.0"
PAD_MULTIPLE = 32
INPUT_NAME = "image"
OUTPUTS = ("heatmap", "regression")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--work", type=Path, default=Path("/tmp/algocyte-detector"))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tile", type=int, default=128, help="training tile side, model pixels")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sim-fields", type=int, default=TRAIN_FIELDS, help="simulated training fields")
    p.add_argument("--sim-share", type=float, default=0.5, help="share of tiles from sim fields")
    p.add_argument("--sim-rbc-per-wbc", type=float, default=TRAIN_RBC_PER_WBC)
    p.add_argument("--score-threshold", type=float, default=0.35)
    p.add_argument("--nms-iou", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-sim", action="store_true", help="train on BCCD only")
    p.add_argument("--no-ship", action="store_true", help="leave models/ untouched")
    return p.parse_args(argv)


class TorchSession:
    """Looks like an onnxruntime session to ``CellDetector``, so training-time checks
    use exactly the runtime's pre-processing and decoding."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=INPUT_NAME)]

    def get_outputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=n) for n in OUTPUTS]

    def run(self, names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        was_training = self._model.training
        self._model.eval()
        with torch.no_grad():
            h, r = self._model(torch.from_numpy(feeds[INPUT_NAME]))
        self._model.train(was_training)
        out = {"heatmap": h.numpy(), "regression": r.numpy()}
        return [out[n] for n in names]


def card_fields(score: float, nms_iou: float) -> dict[str, Any]:
    """Everything in the card that describes how to run the model (not how good it is)."""
    return {
        "name": MODEL_NAME,
        "version": VERSION,
        "task": "detection",
        "labels": ["nucleated_cell"],
        "input": {
            "name": INPUT_NAME,
            "shape": [1, 3, "height", "width"],
            "color": "BGR",
            "pixel_size_um": MODEL_PIXEL_SIZE_UM,
            "normalization": {
                "scale": 1.0 / 255.0,
                "mean": list(NORM_MEAN),
                "std": list(NORM_STD),
                "resample": "whole field to pixel_size_um: area averaging down, bilinear up",
                "padding": f"zeros (after normalisation) at right and bottom to a multiple of {PAD_MULTIPLE}",
            },
        },
        "thresholds": {"score": score, "nms_iou": nms_iou, "max_detections": 500.0},
        "decoding": {
            "stride": STRIDE,
            "pad_multiple": PAD_MULTIPLE,
            "heatmap_output": OUTPUTS[0],
            "regression_output": OUTPUTS[1],
            "regression": "dx, dy: centre offset in heatmap cells; log width, log height in model pixels",
            "peaks": "3x3 local maxima of the heatmap logits above logit(score), then NMS at nms_iou",
        },
    }


def provisional_card(model_path: Path, score: float, nms_iou: float) -> ModelCard:
    data = card_fields(score, nms_iou)
    data.update(
        file=model_path.name,
        sha256=file_sha256(model_path) if model_path.exists() else "0" * 64,
        opset=17,
    )
    return ModelCard.model_validate(data)


def make_batch(
    sources: Sequence[tuple[Sequence[LabelledField], float]],
    rng: np.random.Generator,
    batch: int,
    tile: int,
) -> dict[str, torch.Tensor]:
    weights = np.asarray([w for fields, w in sources if fields], dtype=np.float64)
    pools = [fields for fields, _ in sources if fields]
    weights /= weights.sum()
    images, hm, hmw, reg, regw = [], [], [], [], []
    for _ in range(batch):
        pool = pools[rng.choice(len(pools), p=weights)]
        t = augmented_tile(pool[rng.integers(len(pool))], rng, tile)
        tg = encode_targets(t)
        images.append(t.image)
        hm.append(tg.heatmap)
        hmw.append(tg.heatmap_weight)
        reg.append(tg.regression)
        regw.append(tg.regression_weight)
    x = np.stack(images).astype(np.float32) / 255.0
    x = (x - np.asarray(NORM_MEAN, np.float32)) / np.asarray(NORM_STD, np.float32)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
        "heatmap": torch.from_numpy(np.stack(hm)[:, None]),
        "heatmap_weight": torch.from_numpy(np.stack(hmw)[:, None]),
        "regression": torch.from_numpy(np.stack(reg)),
        "regression_weight": torch.from_numpy(np.stack(regw)[:, None]),
    }


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of centres."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = (target >= 1.0).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - pos)
    n = pos.sum().clamp(min=1.0)
    return ((pos_loss + neg_loss) * weight).sum() / n


def losses(model: torch.nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    h, r = model(b["image"])
    hm = focal_loss(h, b["heatmap"], b["heatmap_weight"])
    w = b["regression_weight"]
    reg = (F.smooth_l1_loss(r, b["regression"], reduction="none", beta=0.1) * w).sum() / (
        w.sum().clamp(min=1.0) * 4
    )
    return hm, reg


def train(
    model: torch.nn.Module,
    sources: Sequence[tuple[Sequence[LabelledField], float]],
    val: Sequence[tuple[str, Sequence[LabelledField]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = min(300, args.steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    start = time.time()
    running = np.zeros(2)
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        batch = make_batch(sources, rng, args.batch, args.tile)
        hm, reg = losses(model, batch)
        loss = hm + reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = 0.98 * running + 0.02 * np.asarray([hm.item(), reg.item()])
        if (step + 1) % 250 == 0 or step + 1 == args.steps:
            msg = f"step {step + 1}/{args.steps} loss hm {running[0]:.3f} reg {running[1]:.3f} lr {lr_at(step):.2e} {time.time() - start:.0f}s"
            if (step + 1) % 1000 == 0:
                card = provisional_card(Path("torch"), args.score_threshold, args.nms_iou)
                detector = CellDetector(card, TorchSession(model))  # type: ignore[arg-type]
                for name, fields in val:
                    c = count(run_detector(detector, fields), args.score_threshold)
                    msg += f" | {name} recall {c.recall:.3f} precision {c.precision:.3f}"
            _log.info(msg)
    model.eval()
    return {
        "seconds": round(time.time() - start, 1),
        "steps": args.steps,
        "batch": args.batch,
        "tile": args.tile,
    }


def make_spatial_dims_dynamic(path: Path) -> None:
    """The exporter fixes H and W; the graph itself (convs, Resize by scales) is size-agnostic."""
    g = onnx.load(str(path))
    for d, name in zip(
        g.graph.input[0].type.tensor_type.shape.dim[2:], ("height", "width"), strict=True
    ):
        d.dim_param = name
    for o in g.graph.output:
        for d, name in zip(
            o.type.tensor_type.shape.dim[2:], ("out_height", "out_width"), strict=True
        ):
            d.dim_param = name
    del g.graph.value_info[:]
    onnx.checker.check_model(g)
    onnx.save(g, str(path))


def preprocessed(detector: CellDetector, lf: LabelledField) -> np.ndarray:
    tensor, _, _ = detector.preprocess(lf.image, lf.pixel_size_um)
    return tensor


def onnx_detector(path: Path, score: float, nms_iou: float, threads: int) -> CellDetector:
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
    )
    return CellDetector(provisional_card(path, score, nms_iou), session)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    wall_start = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    bccd_dir = args.data / "bccd"
    bccd_train = load_bccd(bccd_dir, "train")
    bccd_val = load_bccd(bccd_dir, "val")
    _log.info(
        "BCCD: %d train fields (%d cells), %d val fields (%d cells)",
        len(bccd_train),
        sum(len(f.boxes) for f in bccd_train),
        len(bccd_val),
        sum(len(f.boxes) for f in bccd_val),
    )
    sim_train: list[LabelledField] = []
    sim_val: list[LabelledField] = []
    sim_note = "not used"
    if not args.no_sim:
        sim_train = detector_sim.load_fields(
            detector_sim.DEFAULT_CACHE,
            args.sim_fields,
            detector_sim.TRAIN_SEED,
            args.data / "pbc" / "train",
            args.sim_rbc_per_wbc,
            True,
        )
        sim_val = detector_sim.validation_fields(args.data)
        sim_note = detector_sim.describe(
            args.sim_fields, len(sim_val), args.sim_rbc_per_wbc, detector_sim.VAL_RBC_PER_WBC
        )
        _log.info(
            "simulated: %d train fields (%d cells), %d val fields (%d white cells)",
            len(sim_train),
            sum(len(f.boxes) for f in sim_train),
            len(sim_val),
            sum(len(f.boxes) for f in sim_val),
        )
    model = DetectorNet()
    sources = [
        (bccd_train, 1.0 - args.sim_share if sim_train else 1.0),
        (sim_train, args.sim_share),
    ]
    run = train(model, sources, [("BCCD val", bccd_val), ("sim val", sim_val)], args)

    fp32 = args.work / "detector.fp32.onnx"
    fused = fuse_batch_norms(model.eval())
    export_onnx(
        fused,
        torch.zeros(1, 3, 128, 128),
        fp32,
        input_name=INPUT_NAME,
        output_names=OUTPUTS,
        dynamic_batch=False,
    )
    make_spatial_dims_dynamic(fp32)
    torch.save(model.state_dict(), args.work / "detector.pt")

    fp32_detector = onnx_detector(fp32, args.score_threshold, args.nms_iou, threads=args.threads)
    calib_fields = list(bccd_train[::2]) + list(sim_train[::4])
    calibration = ArrayCalibrationReader(
        INPUT_NAME, [preprocessed(fp32_detector, f) for f in calib_fields]
    )
    int8 = args.work / "detector.int8.onnx"
    quantize_int8(fp32, int8, calibration, per_channel=True, calibrate_method="minmax")

    out = args.work if args.no_ship else args.models
    out.mkdir(parents=True, exist_ok=True)
    shipped = out / "detector.int8.onnx"
    shipped_fp32 = out / "detector.fp32.onnx"
    if out != args.work:
        shipped.write_bytes(int8.read_bytes())
        shipped_fp32.write_bytes(fp32.read_bytes())
    training = {
        "data": {
            "bccd": f"{len(bccd_train)} BCCD train fields ({sum(len(f.boxes) for f in bccd_train)} white cells), hash split (sha256(file name)[0] >= 64), corrections in scripts/bccd_corrections.csv",
            "simulated": sim_note if sim_train else "not used",
            "tiles": f"{args.steps * args.batch} augmented {args.tile}x{args.tile} tiles at {MODEL_PIXEL_SIZE_UM} um/px",
            "augmentation": "scale +-15%, 90-degree rotations and flips, hue/saturation/gain/gamma/contrast/brightness jitter, blur, noise, JPEG",
        },
        "command": "flock /tmp/algocyte-train.lock .venv/bin/python scripts/train_detector.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "wall_time_s": round(time.time() - wall_start, 1),
        "train_loop_s": run["seconds"],
        "steps": run["steps"],
        "batch": run["batch"],
        "seed": args.seed,
        "torch": torch.__version__,
        "threads": args.threads,
        "quantization": "onnxruntime static QDQ, per-channel symmetric INT8 weights, UINT8 activations, MinMax calibration on "
        f"{len(calib_fields)} training fields (scripts/model_export.py)",
    }
    fields = card_fields(args.score_threshold, args.nms_iou)
    fields["fp32_file"] = shipped_fp32.name
    fields["fp32_sha256"] = file_sha256(shipped_fp32)
    card_path = out / f"{MODEL_NAME}.card.json"
    write_card(
        card_path,
        name=fields.pop("name"),
        version=fields.pop("version"),
        task=fields.pop("task"),
        model_path=shipped,
        labels=fields.pop("labels"),
        input=fields.pop("input"),
        training=training,
        metrics={},
        thresholds=fields.pop("thresholds"),
        **fields,
    )
    # The numbers come from the written files through the runtime, as eval_detector.py gets them.
    metrics = evaluate(out, args.data, repeats=20)
    data = json.loads(card_path.read_text(encoding="utf-8"))
    data["metrics"] = metrics
    card_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_markdown(out / f"{MODEL_NAME}.md", load_card(card_path), metrics, training)
    _log.info(
        "wrote %s (%.2f MB) and its card in %s; total %.0f s",
        shipped.name,
        shipped.stat().st_size / 1e6,
        out,
        time.time() - wall_start,
    )
    return 0


def _fmt(m: dict[str, Any] | None) -> str:
    if not m:
        return "n/a"
    return f"{m['recall']:.4f} / {m['precision']:.4f} (TP {m['true_positives']}, FP {m['false_positives']}, FN {m['false_negatives']})"


def write_markdown(
    path: Path, card: ModelCard, metrics: dict[str, Any], training: dict[str, Any]
) -> None:
    lat = metrics["latency_per_field_ms"]
    names = {
        "bccd_val": "BCCD validation (real, held out)",
        "sim_val": "simulated validation (pbc/val cells)",
        "sim_balanced": "simulated, all white-cell classes equally common",
        "sim_demo": "simulated, demo library as `make run`",
    }
    rows = "\n".join(
        f"| {title} | {_fmt(metrics.get(f'{name}_fp32'))} | {_fmt(metrics.get(f'{name}_int8'))} |"
        for name, title in names.items()
        if f"{name}_int8" in metrics
    )
    by_class = "\n".join(
        f"- {names[name]}: " + ", ".join(f"{k} {v}" for k, v in m["recall_by_class"].items())
        for name in names
        if "recall_by_class" in (m := metrics.get(f"{name}_int8") or {})
    )
    if by_class:
        rows += "\n\nWhite cells found by class (INT8):\n\n" + by_class
    sections = [
        (
            "Accuracy (recall / precision at IoU 0.5, score >= {:.2f})".format(
                metrics["score_threshold"]
            ),
            "| fields | FP32 | INT8 |\n|---|---|---|\n" + rows,
        ),
        (
            "Latency per field",
            f"{lat['field']}, CPU {lat['cpu']}, whole `detect()` (resample, inference, decoding), median:\n\n"
            "| model | 1 thread | all threads |\n|---|---|---|\n"
            f"| FP32 | {lat['fp32_1_thread']['median_ms']} ms | {lat['fp32_all_threads']['median_ms']} ms |\n"
            f"| INT8 | {lat['int8_1_thread']['median_ms']} ms | {lat['int8_all_threads']['median_ms']} ms |",
        ),
        (
            "Training",
            "\n".join(f"- {k}: {v}" for k, v in training.items() if k != "data")
            + "\n"
            + "\n".join(f"- data, {k}: {v}" for k, v in training["data"].items()),
        ),
        (
            "Data and licences",
            "BCCD Dataset (github Shenggan/BCCD_Dataset, MIT licence): the even-numbered half as provided, "
            "with white-cell boxes corrected where the annotators left cells unboxed and don't-care regions "
            "for cells cut to a sliver by the border (scripts/bccd_corrections.csv). Simulated fields are "
            "composited from the PBC dataset (Acevedo et al., Data in Brief 30 (2020) 105474, CC BY 4.0).",
        ),
        (
            "Limits",
            "Trained on one real data set (BCCD, one lab, one camera) and on simulated fields; other stains "
            "and optics are covered only by augmentation. Nucleated red cells are found as nucleated cells "
            "and left to the classifier to name. Boxes of cells cut by the image border cover the visible part.",
        ),
    ]
    write_card_markdown(
        path,
        card,
        summary="Finds every nucleated cell (white cells; nucleated red cells too) in a whole smear field. "
        "A CenterNet-style fully-convolutional network on the field resampled to 0.4 um/px: a centre "
        "heatmap plus box size at stride 4. Platelets and platelet clumps are not reported.",
        sections=sections,
    )


if __name__ == "__main__":
    raise SystemExit(main())
