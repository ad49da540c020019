"""Ship a trained classifier: FP32 + INT8 ONNX, calibration, threshold, card and Markdown.

Called by ``train_classifier.py`` at the end of a full run. Every number written to the
card is measured here with onnxruntime on the exported files, through the runtime's
own pre-processing (``InputTransform.network_input``); ``eval_classifier.py`` measures
them again from the shipped files alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from classifier_augment import AugmentConfig, augment
from classifier_data import CLASSES, WHITE_CELL_CLASSES, BccdCells, centre_crop
from classifier_metrics import (
    bccd_metrics,
    choose_threshold,
    expected_calibration_error,
    fit_temperature,
    pbc_metrics,
    softmax,
)
from model_export import (
    ArrayCalibrationReader,
    export_onnx,
    file_sha256,
    latency_ms,
    quantize_int8,
    run_batched,
    session,
    write_card,
    write_card_markdown,
)

from agent.vision.classifier import UNIDENTIFIED, CellClassifier
from agent.vision.preprocess import InputTransform, dihedral_views, mean_over_views

_log = logging.getLogger("ship_classifier")

NAME = "classifier"
CALIBRATION_PLAIN = 256
CALIBRATION_AUGMENTED = 256
INPUT_NAME = "input"


def calibration_batches(
    train_images: np.ndarray, transform: InputTransform, stains: torch.Tensor, seed: int
) -> list[np.ndarray]:
    """Training crops as served, plus augmented ones so activation ranges cover other labs."""
    rng = np.random.default_rng(seed + 7)
    idx = np.sort(rng.choice(len(train_images), CALIBRATION_PLAIN + CALIBRATION_AUGMENTED, False))
    plain = centre_crop(train_images[idx[:CALIBRATION_PLAIN]], transform.crop_px)
    g = torch.Generator().manual_seed(seed + 7)
    aug = augment(
        torch.from_numpy(train_images[idx[CALIBRATION_PLAIN:]]),
        transform.crop_px,
        stains,
        AugmentConfig(),
        g,
    ).numpy()
    crops = np.concatenate([plain, aug])
    return [transform.network_input(crops[i : i + 64]) for i in range(0, len(crops), 64)]


def onnx_logits(
    path: Path, transform: InputTransform, crops: np.ndarray, tta: str = "none"
) -> np.ndarray:
    """Logits of RGB crops through the exported model, with the card's TTA (as the runtime)."""
    sess = session(path, threads=2)
    out = []
    for i in range(0, len(crops), 32):
        x = transform.network_input(crops[i : i + 32])
        if tta == "dihedral8":
            out.append(mean_over_views(run_batched(sess, dihedral_views(x), batch=256), 8))
        else:
            out.append(run_batched(sess, x))
    return np.concatenate(out)


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def experiments_table(path: Path) -> tuple[list[dict[str, Any]], str]:
    """The recorded method comparison (train_classifier.py --experiment runs)."""
    if not path.exists():
        return [], ""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if "pbc_val" not in r:
            continue
        a = r["args"]
        row: dict[str, Any] = {
            "name": r["name"],
            "variant": variant_text(a),
            "stain": a["stain"],
            "augmentation": a["aug"],
            "crop_px": a["crop"],
            "downsample": a["downsample"],
            "epochs": a["epochs"],
            "pbc_val_accuracy": round(r["pbc_val"]["accuracy"], 4),
            "bccd_5class_accuracy": round(r["bccd"]["accuracy"], 4),
            "bccd_balanced_accuracy": round(r["bccd"]["balanced_accuracy"], 4),
            "train_s": round(r["train_s"]),
        }
        if "sim" in r:  # runs from before the simulated check and TTA existed lack these
            row["sim_accuracy"] = round(r["sim"]["accuracy"], 4)
            row["pbc_val_accuracy_tta"] = round(r["pbc_val_tta"]["accuracy"], 4)
            row["bccd_5class_accuracy_tta"] = round(r["bccd_tta"]["accuracy"], 4)
            row["sim_accuracy_tta"] = round(r["sim_tta"]["accuracy"], 4)
        rows.append(row)

    def pct(r: dict[str, Any], key: str, digits: int = 1) -> str:
        return f"{100 * r[key]:.{digits}f}" if key in r else "-"

    md = table(
        [
            [
                r["name"],
                r["stain"],
                str(r["epochs"]),
                pct(r, "pbc_val_accuracy", 2),
                pct(r, "bccd_5class_accuracy"),
                pct(r, "sim_accuracy"),
                pct(r, "pbc_val_accuracy_tta", 2),
                pct(r, "bccd_5class_accuracy_tta"),
                pct(r, "sim_accuracy_tta"),
                str(r["train_s"]),
                r["variant"] if r["augmentation"] == "strong" else "geometric only",
            ]
            for r in rows
        ],
        [
            "run",
            "stain norm.",
            "epochs",
            "PBC val %",
            "BCCD 5-class %",
            "sim %",
            "PBC val TTA %",
            "BCCD TTA %",
            "sim TTA %",
            "train s",
            "recipe",
        ],
    )
    return rows, md


def ship(
    *,
    args: argparse.Namespace,
    model: torch.nn.Module,
    transform: InputTransform,
    train_images: np.ndarray,
    val_crops: np.ndarray,
    val_labels: np.ndarray,
    bccd: BccdCells,
    result: dict[str, Any],
    wall_start: float,
    command: str,
) -> None:
    models: Path = args.models
    models.mkdir(parents=True, exist_ok=True)
    fp32_path = models / f"{NAME}.fp32.onnx"
    int8_path = models / f"{NAME}.int8.onnx"
    card_path = models / f"{NAME}.card.json"
    crop = transform.crop_px

    model = model.eval().to(memory_format=torch.contiguous_format)
    export_onnx(
        model,
        torch.zeros(1, 3, crop, crop),
        fp32_path,
        input_name=INPUT_NAME,
        output_names=("logits",),
    )
    from train_classifier import aug_stains  # the same basis as training

    stains = aug_stains(train_images, crop)
    batches = calibration_batches(train_images, transform, stains, args.seed)
    quantize_int8(fp32_path, int8_path, ArrayCalibrationReader(INPUT_NAME, batches))
    _log.info("exported %s and %s", fp32_path, int8_path)

    tta = args.tta
    logits = {
        "fp32": onnx_logits(fp32_path, transform, val_crops, tta),
        "int8": onnx_logits(int8_path, transform, val_crops, tta),
    }
    bccd_logits = {
        "fp32": onnx_logits(fp32_path, transform, bccd.crops, tta),
        "int8": onnx_logits(int8_path, transform, bccd.crops, tta),
    }
    pbc = {k: pbc_metrics(v, val_labels) for k, v in logits.items()}
    cross = {k: bccd_metrics(v, bccd.labels) for k, v in bccd_logits.items()}

    temperature = fit_temperature(logits["int8"], val_labels)
    probs = softmax(logits["int8"], temperature)
    threshold = choose_threshold(probs, val_labels)
    calibration = {
        "temperature": round(temperature, 4),
        "fitted_on": "PBC val, INT8 logits, minimum negative log-likelihood",
        "ece_before": round(expected_calibration_error(softmax(logits["int8"]), val_labels), 4),
        "ece_after": round(expected_calibration_error(probs, val_labels), 4),
    }
    example = transform.network_input(val_crops[:32])
    latency: dict[str, Any] = {
        k: {
            "batch1_1thread": latency_ms(p, example[:1], threads=1),
            "batch32_2threads": latency_ms(p, example, threads=2, repeats=20),
        }
        for k, p in (("fp32", fp32_path), ("int8", int8_path))
    }
    if tta == "dihedral8":  # one cell = 8 network inputs; 32 cells = one 256 batch
        latency["int8"]["tta_1cell_1thread"] = latency_ms(
            int8_path, dihedral_views(example[:1]), threads=1
        )
        latency["int8"]["tta_32cells_2threads"] = latency_ms(
            int8_path, dihedral_views(example), threads=2, repeats=10
        )
    experiments, experiments_md = experiments_table(args.work / "experiments.jsonl")
    wall_s = time.time() - wall_start
    history = result["history"]
    training = {
        "data": (
            f"PBC (Acevedo et al., Data in Brief 30 (2020) 105474, CC BY 4.0) train split, "
            f"{len(train_images)} images, 8 classes, 0.2 um/px; never BCCD"
        ),
        "command": f"flock /tmp/algocyte-train.lock .venv/bin/python {command}",
        "wall_time_s": round(wall_s),
        "train_time_s": round(result["train_s"]),
        "machine": "2-core x86 CPU (shared), torch threads 2",
        "epochs": args.epochs,
        "seed": args.seed,
        "batch": args.batch,
        "optimizer": f"SGD nesterov momentum 0.9, one-cycle peak lr {args.lr}, wd {args.wd}",
        "label_smoothing": args.smoothing,
        "network": (
            "CellNet (scripts/classifier_net.py): "
            + (
                "3x3 stride-2 conv at 0.2 um/px, "
                if args.stem == "conv"
                else f"avgpool {args.downsample}x, "
            )
            + f"stem {args.stem_width}, ResNet-style stages "
            + "-".join(str(w) for w in args.widths)
            + " with BN, GAP, linear; bfloat16 autocast training" * bool(args.bf16)
        ),
        "stem": args.stem,
        "weight_ema": args.ema,
        "augmentation": augmentation_text(args),
        "calibration_images": CALIBRATION_PLAIN + CALIBRATION_AUGMENTED,
        "final_train_loss": round(history[-1]["loss"], 4),
    }
    identity: dict[str, Any] = {
        "name": "algocyte-wbc-classifier",
        "version": args.version,
        "task": "classification",
        "model_path": int8_path,
        "labels": list(CLASSES),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, crop, crop],
            "color": "RGB",
            "pixel_size_um": transform.pixel_size_um,
            "normalization": transform.to_spec(),
        },
        "training": training,
        "thresholds": {UNIDENTIFIED: threshold},
        "calibration": calibration,
        "inference": {
            "tta": tta,
            "what": (
                "mean logits over the 8 rotations/flips of each crop, one batch"
                if tta == "dihedral8"
                else "one pass per crop"
            ),
        },
        "fp32_file": fp32_path.name,
        "fp32_sha256": file_sha256(fp32_path),
    }
    # A first card so the runtime can load the files; every reported number then comes
    # from eval_classifier.py measuring the shipped files through CellClassifier.
    write_card(card_path, metrics={}, **identity)
    from eval_classifier import evaluate

    ev = evaluate(models, args.data, threads=2)
    _log.info(
        "ship-side check: PBC val INT8 %.4f (eval %.4f), BCCD %.4f (eval %.4f)",
        pbc["int8"]["accuracy"],
        ev["int8"]["pbc_val"]["accuracy"],
        cross["int8"]["accuracy"],
        ev["int8"]["bccd"]["accuracy"],
    )
    metrics = card_metrics(ev, transform, args, experiments)
    metrics["latency_ms"] = latency
    metrics["size_bytes"] = {"fp32": fp32_path.stat().st_size, "int8": int8_path.stat().st_size}
    card = write_card(card_path, metrics=metrics, **identity)
    # The shipped files must load and agree with what was measured here.
    check = CellClassifier.load(models, threads=2)
    agree = check.logits([c[:, :, ::-1] for c in val_crops[:64]]).argmax(1)
    if not np.array_equal(agree, logits["int8"][:64].argmax(1)):
        raise RuntimeError("the shipped classifier disagrees with the measured INT8 model")
    write_markdown(models / f"{NAME}.md", card, metrics, training, calibration, experiments_md)
    _log.info(
        "shipped: PBC val FP32 %.4f INT8 %.4f; BCCD INT8 %.4f; T %.3f; unidentified >= %.2f; %ds",
        metrics["pbc_val"]["accuracy_fp32"],
        metrics["pbc_val"]["accuracy_int8"],
        metrics["bccd_cross_lab"]["accuracy_int8"],
        temperature,
        threshold,
        wall_s,
    )


def variant_text(a: dict[str, Any]) -> str:
    """One line naming an experiment's recipe (args as logged; old runs lack new keys)."""
    parts = [f"scale +-{a.get('scale', 0.15)}"]
    if a.get("p_wide_scale"):
        lo, hi = a.get("wide_scale", (0.6, 1.4))
        parts.append(f"wide scale {lo}-{hi} p {a['p_wide_scale']}")
    if a.get("pad_background"):
        parts.append("background pad")
    parts.append(
        f"stain amount +-{a.get('stain_amount', 0.35)}, "
        f"stain-vector jitter {a.get('stain_jitter_max') or 0.12}"
    )
    if a.get("hue", 0.25) != 0.25 or a.get("saturation", 0.4) != 0.4:
        parts.append(f"hue +-{a.get('hue')} rad, chroma +-{a.get('saturation')}")
    for key, label in (
        ("contrast_low", "contrast down to"),
        ("channel_od", "channel OD +-"),
        ("p_lowres", "low-res p"),
        ("grey", "grey p"),
    ):
        if a.get(key):
            value = 1 - a[key] if key == "contrast_low" else a[key]
            parts.append(f"{label} {value:g}")
    if a.get("blur_max", 2.2) != 2.2:
        parts.append(f"blur sigma <= {a['blur_max']}")
    parts.append(
        f"p colour/blur/noise/jpeg {a.get('p_colour', 0.85)}/{a.get('p_blur', 0.6)}/"
        f"{a.get('p_noise', 0.5)}/{a.get('p_jpeg', 0.5)}"
    )
    parts.append(
        f"stem {a.get('stem', 'pool')}, widths "
        + "-".join(str(w) for w in a.get("widths", (32, 64, 128, 192)))
        + f", EMA {a.get('ema', 0)}"
    )
    return ", ".join(parts)


def augmentation_text(args: argparse.Namespace) -> str:
    """The training augmentation, in words, for the card."""
    if args.aug != "strong":
        return "rotation, flips, scale, shift"
    scale = f"scale x{1 / (1 + args.scale):.2f}-{1 + args.scale:.2f}"
    if args.p_wide_scale:
        lo, hi = args.wide_scale
        scale += f" (for a fraction {args.p_wide_scale} of crops log-uniform x{lo}-{hi})"
    jitter = f"U(0, {args.stain_jitter_max})" if args.stain_jitter_max else "0.12"
    text = (
        f"rotation 0-360, flips, {scale}, shift +-6 px"
        + (", padded with the background colour" if args.pad_background else "")
        + (f"; grey (chroma dropout) p {args.grey}" if args.grey else "")
        + f"; in optical density: each stain's amount x{1 - args.stain_amount:.2f}-"
        f"{1 + args.stain_amount:.2f} and its colour (stain-vector jitter sigma {jitter})"
        + (
            f", per-channel OD gain x{math.exp(-args.channel_od):.2f}-{math.exp(args.channel_od):.2f}"
            if args.channel_od
            else ""
        )
        + f", p {args.p_colour}; illumination gain, gamma, contrast"
        + (f" (down to x{1 - args.contrast_low:.2f})" if args.contrast_low else "")
        + f", hue +-{args.hue} rad, chroma x{1 - args.saturation:.2f}-{1 + args.saturation:.2f}, "
        f"p {args.p_colour}; Gaussian blur sigma 0.3-{args.blur_max} px, p {args.p_blur}"
        + (f"; downscale-upscale x1.5-3, p {args.p_lowres}" if args.p_lowres else "")
        + f"; noise, p {args.p_noise}; JPEG q25-92, p {args.p_jpeg} "
        "(scripts/classifier_augment.py); then the runtime's stain normalisation"
    )
    return text


def card_metrics(
    ev: dict[str, Any],
    transform: InputTransform,
    args: argparse.Namespace,
    experiments: list[dict[str, Any]],
) -> dict[str, Any]:
    """The card's metrics from an ``eval_classifier.evaluate`` of the shipped files."""
    i8, f32 = ev["int8"], ev["fp32"]

    def r4(d: dict[str, float]) -> dict[str, float]:
        return {k: round(v, 4) for k, v in d.items()}

    return {
        "measured_by": "scripts/eval_classifier.py on the shipped files (CellClassifier)",
        "pbc_val": {
            "n": i8["pbc_val"]["n"],
            "accuracy_fp32": round(f32["pbc_val"]["accuracy"], 4),
            "accuracy_int8": round(i8["pbc_val"]["accuracy"], 4),
            "recall_int8": r4(i8["pbc_val"]["recall"]),
            "precision_int8": r4(i8["pbc_val"]["precision"]),
            "recall_fp32": r4(f32["pbc_val"]["recall"]),
            "support": i8["pbc_val"]["support"],
            "confusion_int8": {
                "rows_truth_cols_predicted": list(CLASSES),
                "matrix": i8["pbc_val"]["confusion"],
            },
        },
        "bccd_cross_lab": {
            "what": (
                "white cells of the BCCD fields (another lab and camera), cropped from the WBC "
                "boxes at 0.0714 um/px, 5-class accuracy (a prediction outside the five counts "
                "as wrong); fields with two different subtypes or no WBC box skipped; never "
                "trained on, never used to fit anything"
            ),
            "method": f"stain normalisation '{transform.reference.method}' + "
            + ("strong augmentation" if args.aug == "strong" else "geometric augmentation")
            + (", 8-view test-time augmentation" if args.tta == "dihedral8" else ""),
            "n": i8["bccd"]["n"],
            "skipped_fields": i8["bccd"]["skipped_fields"],
            "accuracy_fp32": round(f32["bccd"]["accuracy"], 4),
            "accuracy_int8": round(i8["bccd"]["accuracy"], 4),
            "balanced_accuracy_int8": round(i8["bccd"]["balanced_accuracy"], 4),
            "recall_int8": r4(i8["bccd"]["recall"]),
            "confusion_int8": {
                "rows": i8["bccd"]["confusion_rows"],
                "cols": i8["bccd"]["confusion_cols"],
                "matrix": i8["bccd"]["confusion"],
            },
            "method_comparison": experiments,
        },
        "sim_check": {
            "what": (
                "PBC val cells composited onto synthetic smears by drivers/sim, rendered, "
                "defocused and noised like the virtual camera, classified at their true "
                "centres (scripts/sim_check_classifier.py)"
            ),
            "accuracy_int8": round(i8["sim"]["accuracy"], 4),
            "accuracy_fp32": round(f32["sim"]["accuracy"], 4),
            "recall_int8": r4(i8["sim"]["recall"]),
            "support": i8["sim"]["support"],
            "differential_int8": {
                k: {kk: round(vv, 2) for kk, vv in v.items()}
                for k, v in i8["sim"]["differential"].items()
            },
            "largest_differential_error_int8": round(i8["sim"]["largest_differential_error"], 2),
        },
        "unidentified": {
            "pbc_val": i8["pbc_val"]["unidentified"],
            "bccd": i8["bccd"]["unidentified"],
        },
    }


def write_markdown(
    path: Path,
    card: Any,
    metrics: dict[str, Any],
    training: dict[str, Any],
    calibration: dict[str, Any],
    experiments_md: str,
) -> None:
    pbc = metrics["pbc_val"]
    per_class = table(
        [
            [
                c,
                str(pbc["support"][c]),
                f"{100 * pbc['recall_int8'][c]:.1f}",
                f"{100 * pbc['precision_int8'][c]:.1f}",
                f"{100 * pbc['recall_fp32'][c]:.1f}",
            ]
            for c in CLASSES
        ],
        ["class", "val cells", "INT8 recall %", "INT8 precision %", "FP32 recall %"],
    )
    cm = pbc["confusion_int8"]["matrix"]
    confusion = table(
        [[c, *[str(v) for v in cm[i]]] for i, c in enumerate(CLASSES)],
        ["truth \\ predicted", *[c[:5] for c in CLASSES]],
    )
    bccd = metrics["bccd_cross_lab"]
    bcm = bccd["confusion_int8"]
    bccd_confusion = table(
        [[r, *[str(v) for v in bcm["matrix"][i]]] for i, r in enumerate(bcm["rows"])],
        ["truth \\ predicted", *bcm["cols"]],
    )
    lat = metrics["latency_ms"]
    und = metrics["unidentified"]
    summary = (
        "Names the cell at the centre of a 128 x 128 crop at 0.2 um/px (25.6 um) as one of "
        "8 PBC classes. Trained from scratch on PBC (CellaVision DM96, MGG stain) on a 2-core "
        "CPU; static INT8 (QDQ, per-channel weights). Probabilities are temperature-"
        f"calibrated (T = {calibration['temperature']}); a cell whose top probability is "
        f"below {card.thresholds[UNIDENTIFIED]} is reported as `unidentified`. "
        f"White-cell classes: {', '.join(WHITE_CELL_CLASSES)}."
    )
    white_recall = min(pbc["recall_int8"][c] for c in WHITE_CELL_CLASSES)
    checks = [
        (
            "PBC val INT8 accuracy >= 98.5 %",
            100 * pbc["accuracy_int8"],
            pbc["accuracy_int8"] >= 0.985,
        ),
        ("every white-cell class recall >= 97 %", 100 * white_recall, white_recall >= 0.97),
        (
            "INT8 within 0.5 point of FP32",
            100 * (pbc["accuracy_fp32"] - pbc["accuracy_int8"]),
            pbc["accuracy_fp32"] - pbc["accuracy_int8"] <= 0.005,
        ),
        (
            "BCCD 5-class accuracy >= 90 %",
            100 * bccd["accuracy_int8"],
            bccd["accuracy_int8"] >= 0.9,
        ),
    ]
    acceptance = table(
        [[name, f"{value:.2f}", "met" if ok else "NOT met"] for name, value, ok in checks],
        ["target", "measured", ""],
    )
    sections = [
        ("Targets", acceptance),
        (
            "Input",
            "Rescale to 0.2 um/px (area when shrinking), centre 128 x 128 crop padded with "
            "the background colour, stain normalisation "
            f"`{card.input.normalization['stain']['method']}` (reference in the card), "
            "RGB / 255, minus mean, over std. "
            + (
                "The network starts with a learned stride-2 convolution at 0.2 um/px."
                if card.training.get("stem") == "conv"
                else "The network average-pools 2x first."
            )
            + (
                " Test-time augmentation: the logits are averaged over the 8 rotations/flips "
                "of each crop (one batch of 8 per cell)."
                if (card.model_extra or {}).get("inference", {}).get("tta") == "dihedral8"
                else ""
            ),
        ),
        (
            "PBC validation (INT8)",
            f"Accuracy INT8 {100 * pbc['accuracy_int8']:.2f} %, FP32 "
            f"{100 * pbc['accuracy_fp32']:.2f} % on {pbc['n']} cells.\n\n"
            + per_class
            + "\n\nConfusion (INT8):\n\n"
            + confusion,
        ),
        (
            "Cross-lab check: BCCD white cells (never trained on)",
            f"{bccd['what']}. Method: {bccd['method']}. 5-class accuracy INT8 "
            f"{100 * bccd['accuracy_int8']:.1f} % (FP32 {100 * bccd['accuracy_fp32']:.1f} %), "
            f"balanced {100 * bccd['balanced_accuracy_int8']:.1f} %, n = {bccd['n']}.\n\n"
            + bccd_confusion
            + (
                "\n\nMethods compared (torch FP32 on the same data; TTA = mean over the 8 "
                "rotations/flips; sim = the simulated-field check; runs before the sim "
                "check existed show -):\n\n" + experiments_md
                if experiments_md
                else ""
            ),
        ),
        (
            "Simulated fields (drivers/sim)",
            f"{metrics['sim_check']['what']}. Accuracy INT8 "
            f"{100 * metrics['sim_check']['accuracy_int8']:.1f} % (FP32 "
            f"{100 * metrics['sim_check']['accuracy_fp32']:.1f} %), n = "
            f"{sum(metrics['sim_check']['support'].values())}.\n\n"
            + table(
                [
                    [c, str(metrics["sim_check"]["support"][c]), f"{100 * v:.1f}"]
                    for c, v in metrics["sim_check"]["recall_int8"].items()
                ],
                ["class", "objects", "INT8 recall %"],
            )
            + "\n\nWhite-cell differential (per 100, INT8, `unidentified` left out):\n\n"
            + table(
                [
                    [
                        c,
                        f"{d['truth']:.1f}",
                        f"{d['classified']:.1f}",
                        f"{d['classified'] - d['truth']:+.1f}",
                    ]
                    for c, d in metrics["sim_check"]["differential_int8"].items()
                ],
                ["class", "truth", "classified", "difference"],
            )
            + f"\n\nLargest error {metrics['sim_check']['largest_differential_error_int8']:.1f} "
            "points (the end-to-end limit is 3).",
        ),
        (
            "Unidentified threshold",
            f"Threshold {card.thresholds[UNIDENTIFIED]} on the calibrated confidence. PBC val: "
            f"{100 * und['pbc_val']['unidentified_fraction']:.1f} % unidentified, accuracy of the "
            f"rest {100 * und['pbc_val']['accuracy_of_identified']:.2f} %. BCCD: "
            f"{100 * und['bccd']['unidentified_fraction']:.1f} % unidentified, accuracy of the "
            f"rest {100 * und['bccd']['accuracy_of_identified']:.1f} % (8-class). ECE "
            f"{calibration['ece_before']} before, {calibration['ece_after']} after scaling.",
        ),
        (
            "Size and speed",
            f"INT8 {metrics['size_bytes']['int8'] / 1e6:.2f} MB, FP32 "
            f"{metrics['size_bytes']['fp32'] / 1e6:.2f} MB. Latency on the training machine "
            f"(median ms, batch 1, 1 thread): FP32 {lat['fp32']['batch1_1thread']['median_ms']}, "
            f"INT8 {lat['int8']['batch1_1thread']['median_ms']}; batch 32, 2 threads: FP32 "
            f"{lat['fp32']['batch32_2threads']['median_ms']}, INT8 "
            f"{lat['int8']['batch32_2threads']['median_ms']}.",
        ),
        (
            "Training",
            f"`{training['command']}`: {training['epochs']} epochs, seed {training['seed']}, "
            f"wall time {training['wall_time_s']} s on a {training['machine']}. "
            f"{training['optimizer']}; label smoothing {training['label_smoothing']}. "
            f"Augmentation: {training['augmentation']}. Reproduce the numbers: "
            "`.venv/bin/python scripts/eval_classifier.py`.",
        ),
        (
            "Data and licence",
            "PBC images: Acevedo A., Merino A., Alférez S., Molina Á., Boldú L., Rodellar J., "
            '"A dataset of microscopic peripheral blood cell images for development of automatic '
            'recognition systems", Data in Brief 30 (2020) 105474, CC BY 4.0. BCCD (MIT) only '
            "as an external check.",
        ),
        (
            "Limits",
            "Trained on one lab (healthy donors, one stain, one scanner): blasts, atypical "
            "lymphocytes, smudge cells and artefacts have no class and may get any label; "
            "check `unidentified` rates on a new site before trusting the differential.",
        ),
    ]
    write_card_markdown(path, card, summary=summary, sections=sections)
