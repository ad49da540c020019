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
    unidentified_stats,
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
from agent.vision.preprocess import InputTransform

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


def onnx_logits(path: Path, transform: InputTransform, crops: np.ndarray) -> np.ndarray:
    sess = session(path, threads=2)
    out = [
        run_batched(sess, transform.network_input(crops[i : i + 256]))
        for i in range(0, len(crops), 256)
    ]
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
        a = r["args"]
        variant = (
            f"scale +-{a.get('scale', 0.15)}, stain amount +-{a.get('stain_amount', 0.35)}, "
            f"stain-vector jitter {a.get('stain_jitter_max') or 0.12}, "
            f"p colour/blur/noise/jpeg {a.get('p_colour', 0.85)}/{a.get('p_blur', 0.6)}/"
            f"{a.get('p_noise', 0.5)}/{a.get('p_jpeg', 0.5)}, stem {a.get('stem', 'pool')}, "
            f"widths {'-'.join(str(w) for w in a.get('widths', (32, 64, 128, 192)))}, "
            f"EMA {a.get('ema', 0)}"
        )
        rows.append(
            {
                "name": r["name"],
                "variant": variant,
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
        )
    md = table(
        [
            [
                r["name"],
                r["stain"],
                r["augmentation"],
                f"{r['crop_px']}/{r['downsample']}",
                str(r["epochs"]),
                f"{100 * r['pbc_val_accuracy']:.2f}",
                f"{100 * r['bccd_5class_accuracy']:.1f}",
                f"{100 * r['bccd_balanced_accuracy']:.1f}",
                r["variant"] if r["augmentation"] == "strong" else "",
            ]
            for r in rows
        ],
        [
            "run",
            "stain norm.",
            "augmentation",
            "crop/pool",
            "epochs",
            "PBC val %",
            "BCCD 5-class %",
            "BCCD balanced %",
            "variant",
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

    logits = {
        "fp32": onnx_logits(fp32_path, transform, val_crops),
        "int8": onnx_logits(int8_path, transform, val_crops),
    }
    bccd_logits = {
        "fp32": onnx_logits(fp32_path, transform, bccd.crops),
        "int8": onnx_logits(int8_path, transform, bccd.crops),
    }
    pbc = {k: pbc_metrics(v, val_labels) for k, v in logits.items()}
    cross = {k: bccd_metrics(v, bccd.labels) for k, v in bccd_logits.items()}

    temperature = fit_temperature(logits["int8"], val_labels)
    probs = softmax(logits["int8"], temperature)
    threshold = choose_threshold(probs, val_labels)
    bccd_truth = np.array([CLASSES.index(c) for c in bccd.labels])
    bccd_probs = softmax(bccd_logits["int8"], temperature)
    unidentified = {
        "pbc_val": unidentified_stats(probs, val_labels, threshold),
        "bccd": unidentified_stats(bccd_probs, bccd_truth, threshold),
    }
    calibration = {
        "temperature": round(temperature, 4),
        "fitted_on": "PBC val, INT8 logits, minimum negative log-likelihood",
        "ece_before": round(expected_calibration_error(softmax(logits["int8"]), val_labels), 4),
        "ece_after": round(expected_calibration_error(probs, val_labels), 4),
    }
    example = transform.network_input(val_crops[:32])
    latency = {
        k: {
            "batch1_1thread": latency_ms(p, example[:1], threads=1),
            "batch32_2threads": latency_ms(p, example, threads=2, repeats=20),
        }
        for k, p in (("fp32", fp32_path), ("int8", int8_path))
    }
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
        "weight_ema": args.ema,
        "augmentation": (
            f"rotation 0-360, flips, scale x{1 / (1 + args.scale):.2f}-{1 + args.scale:.2f}, "
            "shift +-6 px; in optical density: each stain's amount "
            f"x{1 - args.stain_amount:.2f}-{1 + args.stain_amount:.2f} and its colour "
            "(stain-vector jitter"
            + (f" sigma U(0, {args.stain_jitter_max})" if args.stain_jitter_max else " sigma 0.12")
            + f"), p {args.p_colour}; illumination gain, gamma, contrast, hue, saturation, "
            f"p {args.p_colour}; Gaussian blur sigma 0.3-2.2 px, p {args.p_blur}; noise, "
            f"p {args.p_noise}; JPEG q25-92, p {args.p_jpeg} (scripts/classifier_augment.py); "
            "then the runtime's stain normalisation"
            if args.aug == "strong"
            else "rotation, flips, scale, shift"
        ),
        "calibration_images": CALIBRATION_PLAIN + CALIBRATION_AUGMENTED,
        "final_train_loss": round(history[-1]["loss"], 4),
    }
    int8 = pbc["int8"]
    metrics = {
        "pbc_val": {
            "n": int8["n"],
            "accuracy_fp32": round(pbc["fp32"]["accuracy"], 4),
            "accuracy_int8": round(int8["accuracy"], 4),
            "recall_int8": {c: round(v, 4) for c, v in int8["recall"].items()},
            "precision_int8": {c: round(v, 4) for c, v in int8["precision"].items()},
            "recall_fp32": {c: round(v, 4) for c, v in pbc["fp32"]["recall"].items()},
            "support": int8["support"],
            "confusion_int8": {
                "rows_truth_cols_predicted": list(CLASSES),
                "matrix": int8["confusion"],
            },
        },
        "bccd_cross_lab": {
            "what": (
                "white cells of the BCCD fields (another lab and camera), cropped from the WBC "
                "boxes at 0.0714 um/px, 5-class accuracy (a prediction outside the five counts "
                "as wrong); fields with two different subtypes or no WBC box skipped"
            ),
            "method": f"stain normalisation '{transform.reference.method}' + "
            + ("strong augmentation" if args.aug == "strong" else "geometric augmentation"),
            "n": cross["int8"]["n"],
            "skipped_fields": bccd.skipped,
            "accuracy_fp32": round(cross["fp32"]["accuracy"], 4),
            "accuracy_int8": round(cross["int8"]["accuracy"], 4),
            "balanced_accuracy_int8": round(cross["int8"]["balanced_accuracy"], 4),
            "recall_int8": {c: round(v, 4) for c, v in cross["int8"]["recall"].items()},
            "confusion_int8": {
                "rows": cross["int8"]["confusion_rows"],
                "cols": cross["int8"]["confusion_cols"],
                "matrix": cross["int8"]["confusion"],
            },
            "method_comparison": experiments,
        },
        "unidentified": unidentified,
        "latency_ms": latency,
        "size_bytes": {"fp32": fp32_path.stat().st_size, "int8": int8_path.stat().st_size},
    }
    card = write_card(
        card_path,
        name="algocyte-wbc-classifier",
        version=args.version,
        task="classification",
        model_path=int8_path,
        labels=list(CLASSES),
        input={
            "name": INPUT_NAME,
            "shape": ["batch", 3, crop, crop],
            "color": "RGB",
            "pixel_size_um": transform.pixel_size_um,
            "normalization": transform.to_spec(),
        },
        training=training,
        metrics=metrics,
        thresholds={UNIDENTIFIED: threshold},
        calibration=calibration,
        fp32_file=fp32_path.name,
        fp32_sha256=file_sha256(fp32_path),
    )
    # The shipped files must load and agree with what was measured here.
    check = CellClassifier.load(models, threads=2)
    agree = check.logits([c[:, :, ::-1] for c in val_crops[:64]]).argmax(1)
    if not np.array_equal(agree, logits["int8"][:64].argmax(1)):
        raise RuntimeError("the shipped classifier disagrees with the measured INT8 model")
    write_markdown(models / f"{NAME}.md", card, metrics, training, calibration, experiments_md)
    _log.info(
        "shipped: PBC val FP32 %.4f INT8 %.4f; BCCD INT8 %.4f; T %.3f; unidentified >= %.2f; %ds",
        pbc["fp32"]["accuracy"],
        int8["accuracy"],
        cross["int8"]["accuracy"],
        temperature,
        threshold,
        wall_s,
    )


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
            "RGB / 255, minus mean, over std. The network average-pools 2x first.",
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
                "\n\nMethods compared (torch FP32, same data):\n\n" + experiments_md
                if experiments_md
                else ""
            ),
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
