"""Train, quantize and card the white-cell classifier (PBC, 8 classes) on a 2-core CPU.

    flock /tmp/algocyte-train.lock .venv/bin/python scripts/train_classifier.py

does the full run: decode PBC once into memory, train from scratch with batched
augmentation, export ONNX, quantize to INT8 (static QDQ, per-channel), evaluate FP32
and INT8 on PBC val and on the BCCD white cells (cross-lab check, never trained on),
fit the temperature and the ``unidentified`` threshold, and write
``models/classifier.int8.onnx``, ``models/classifier.fp32.onnx``,
``models/classifier.card.json`` and ``models/classifier.md``.

``--experiment NAME`` trains and evaluates (torch FP32) only, appending one JSON line to
``runs/classifier/experiments.jsonl``: how the stain-normalisation and augmentation
options were compared.

Training inputs go through ``agent.vision.preprocess.InputTransform.network_input``
(stain normalisation, mean/std), the very code the runtime uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifier_augment import AugmentConfig, augment, stain_basis
from classifier_data import (
    CLASSES,
    DEFAULT_DATA,
    FIVE_CLASSES,
    REPO,
    SOURCES,
    WHITE_CELL_CLASSES,
    CellSet,
    Checks,
    centre_crop,
    load_cells,
    load_checks,
)
from classifier_metrics import five_class_metrics, pbc_metrics
from classifier_net import NORMS, CellNet

from agent.vision import stain
from agent.vision.preprocess import InputTransform, dihedral_views, mean_over_views

_log = logging.getLogger("train_classifier")

REFERENCE_UM = 0.2
STAT_SAMPLE = 2000
"""Training crops used to fit the stain reference and the input mean/std."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with pbc/, raabin/, bccd/, lisc/"
    )
    p.add_argument(
        "--sources",
        type=lambda s: tuple(x for x in s.split(",") if x),
        default=SOURCES,
        help=f"labs to train on, comma-separated, of {','.join(SOURCES)}; one lab alone "
        "is a leave-one-lab-out run (the other lab's val split is the held-out check)",
    )
    p.add_argument(
        "--class-power",
        type=float,
        default=0.5,
        help="sampling: each lab gets an equal share of every batch and, within a lab, "
        "class c is drawn in proportion to n_c ** this (1: as the data, 0: balanced)",
    )
    p.add_argument("--norm", choices=NORMS, default="bn", help="normalisation layers, see CellNet")
    p.add_argument(
        "--lisc-boxes",
        type=Path,
        default=REPO / "scripts" / "lisc_boxes.csv",
        help="LISC white-cell boxes (cross-lab check only; skipped when missing)",
    )
    p.add_argument("--models", type=Path, default=REPO / "models", help="where to ship")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "classifier")
    p.add_argument("--stain", choices=stain.METHODS, default="reinhard")
    p.add_argument("--aug", choices=["strong", "geometric"], default="strong")
    p.add_argument("--crop", type=int, default=128, help="crop side, px at 0.2 um/px")
    p.add_argument(
        "--downsample", type=int, default=2, help="average pooling first (--stem pool only)"
    )
    p.add_argument("--stem", choices=["pool", "conv"], default="conv", help="see CellNet")
    p.add_argument("--stem-width", type=int, default=32)
    p.add_argument(
        "--widths",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=(48, 96, 160, 256),
        help="channels of the 4 residual stages, comma-separated",
    )
    p.add_argument("--ema", type=float, default=0.0, help="weight EMA decay; 0: off")
    p.add_argument("--prefetch", action="store_true", help="augment in a second thread")
    p.add_argument(
        "--no-bf16",
        dest="bf16",
        action="store_false",
        help="train in float32 (default: bfloat16 autocast, 1.7x faster on AVX512-BF16)",
    )
    p.add_argument("--p-colour", type=float, default=0.5)
    p.add_argument("--p-blur", type=float, default=0.3)
    p.add_argument("--p-noise", type=float, default=0.3)
    p.add_argument("--p-jpeg", type=float, default=0.3)
    p.add_argument(
        "--stain-jitter-max",
        type=float,
        default=0.0,
        help="per-crop stain-vector jitter deviation drawn from U(0, this); 0: fixed 0.12",
    )
    p.add_argument("--grey", type=float, default=0.0, help="fraction of crops made grey")
    p.add_argument("--scale", type=float, default=0.3, help="scale augmentation range (+-)")
    p.add_argument(
        "--p-wide-scale",
        type=float,
        default=0.0,
        help="fraction of crops scaled log-uniformly within --wide-scale instead",
    )
    p.add_argument(
        "--wide-scale",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        default=(0.6, 1.4),
        help="LO,HI of the wide scale augmentation",
    )
    p.add_argument(
        "--pad-background",
        action="store_true",
        help="pad beyond the image with its background colour (as the runtime), not mirror",
    )
    p.add_argument("--hue", type=float, default=0.25, help="hue rotation range (+- rad)")
    p.add_argument("--saturation", type=float, default=0.4, help="chroma scale range (+-)")
    p.add_argument("--contrast-low", type=float, default=0.0, help="contrast reduction down to 1-x")
    p.add_argument("--channel-od", type=float, default=0.0, help="per-channel OD gain (+- log)")
    p.add_argument("--p-lowres", type=float, default=0.0, help="downscale-upscale fraction")
    p.add_argument("--blur-max", type=float, default=2.2, help="largest blur sigma (px)")
    p.add_argument(
        "--stain-amount", type=float, default=0.6, help="relative stain amount jitter (+-)"
    )
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2, help="peak of the one-cycle schedule")
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="use only N training images (smoke)")
    p.add_argument(
        "--tta",
        choices=["none", "dihedral8"],
        default="none",
        help="test-time augmentation the shipped model card asks the runtime for",
    )
    p.add_argument("--experiment", metavar="NAME", help="train + evaluate only, no shipping")
    p.add_argument(
        "--plain-metrics",
        action="store_true",
        help="also score every check without test-time augmentation (slower evaluation)",
    )
    p.add_argument(
        "--evaluate",
        type=Path,
        metavar="CHECKPOINT",
        help="only evaluate a saved experiment checkpoint (.pt) and print its metrics",
    )
    p.add_argument(
        "--from-checkpoint",
        type=Path,
        metavar="CHECKPOINT",
        help=(
            "export, measure and ship a saved run (.pt) without training it again, e.g. "
            "with another --tta; the card names the training command that made it"
        ),
    )
    p.add_argument("--version", default="1.0.0")
    return p.parse_args(argv)


def fit_transform(train_images: np.ndarray, method: str, crop: int, seed: int) -> InputTransform:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(train_images), min(STAT_SAMPLE, len(train_images)), replace=False)
    crops = centre_crop(train_images[np.sort(idx)], crop)
    reference = stain.fit_reference(list(crops), method)  # type: ignore[arg-type]
    normed = stain.normalize(crops, reference)
    pixels = normed.reshape(-1, 3).astype(np.float64)  # float32 sums saturate at 2**24
    mean = pixels.mean(axis=0)
    std = pixels.std(axis=0)
    return InputTransform(
        crop_px=crop,
        pixel_size_um=REFERENCE_UM,
        reference=reference,
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
    )


def predict(
    model: torch.nn.Module,
    transform: InputTransform,
    crops: np.ndarray,
    batch: int = 64,
    tta: bool = False,
) -> np.ndarray:
    """Logits of RGB uint8 crops (already at crop size) through the runtime transform.

    ``tta``: mean over the 8 dihedral views, as ``CellClassifier`` with ``dihedral8``.
    """
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            x = transform.network_input(crops[i : i + batch])
            if tta:
                x = dihedral_views(x)
            t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            logits = model(t).numpy()
            out.append(mean_over_views(logits, 8) if tta else logits)
    return np.concatenate(out)


def sim_set(args: argparse.Namespace) -> tuple[np.ndarray, list[str]]:
    """RGB crops of the simulated-field check (PBC val cells on synthetic smears), cached."""
    from sim_check_classifier import sim_cells

    cache = args.work / f"sim_cells_{args.crop}.npz"
    if cache.exists():
        data = np.load(cache)
        return data["crops"], [str(t) for t in data["truth"]]
    sim = sim_cells(args.data / "pbc" / "val", crop_px=args.crop, reference_um=REFERENCE_UM)
    crops = np.stack([c[:, :, ::-1] for c in sim.crops_bgr])
    np.savez_compressed(cache, crops=crops, truth=np.array(sim.truth))
    return crops, sim.truth


def evaluate_all(
    args: argparse.Namespace,
    model: torch.nn.Module,
    transform: InputTransform,
    checks: Checks,
) -> dict[str, Any]:
    """Every lab's val split and cross-lab set, and the simulated-field check, with TTA.

    ``pbc_five`` (PBC val's five white cells, 5-class) is the held-out figure of a run
    trained on Raabin alone; ``raabin_val`` that of a run trained on PBC alone.
    """
    from sim_check_classifier import sim_metrics

    sim_crops, sim_truth = sim_set(args)
    five = np.isin(checks.pbc_labels, [CLASSES.index(c) for c in FIVE_CLASSES])
    out: dict[str, Any] = {}
    for suffix, tta in (("", False), ("_tta", True)):
        if not tta and not args.plain_metrics:
            continue
        val_logits = predict(model, transform, checks.pbc_crops, tta=tta)
        out["pbc_val" + suffix] = pbc_metrics(val_logits, checks.pbc_labels)
        out["pbc_five" + suffix] = five_class_metrics(
            val_logits[five], [CLASSES[i] for i in checks.pbc_labels[five]]
        )
        for name, cells in (
            ("raabin_val", checks.raabin),
            ("bccd", checks.bccd),
            ("lisc", checks.lisc),
        ):
            if cells is not None:
                logits = predict(model, transform, cells.crops, tta=tta)
                out[name + suffix] = five_class_metrics(logits, cells.labels)
        sim_top = [CLASSES[i] for i in predict(model, transform, sim_crops, tta=tta).argmax(1)]
        out["sim" + suffix] = sim_metrics(sim_top, sim_top, sim_truth)
    return out


def log_result(result: dict[str, Any]) -> None:
    for suffix in ("", "_tta"):
        if "pbc_val" + suffix not in result:
            continue

        def five(key: str, suffix: str = suffix) -> str:
            m = result.get(key + suffix)
            if m is None:
                return f"{key} -"
            recall = " ".join(f"{c[:3]} {m['recall'][c]:.2f}" for c in FIVE_CLASSES)
            return f"{key} {m['accuracy']:.4f} (bal {m['balanced_accuracy']:.4f}; {recall})"

        _log.info(
            "%s%s: PBC val %.4f (white min recall %.3f) | %s | %s | %s | %s | "
            "sim %.4f (lymphocyte %.3f, worst differential %.1f)",
            result["name"],
            suffix.replace("_", " "),
            result["pbc_val" + suffix]["accuracy"],
            min(result["pbc_val" + suffix]["recall"][c] for c in WHITE_CELL_CLASSES),
            five("pbc_five"),
            five("raabin_val"),
            five("bccd"),
            five("lisc"),
            result["sim" + suffix]["accuracy"],
            result["sim" + suffix]["recall"].get("lymphocyte", float("nan")),
            result["sim" + suffix]["largest_differential_error"],
        )


def sampling_weights(cells: CellSet, class_power: float) -> np.ndarray:
    """Per-image draw probabilities: labs equal, classes within a lab as n_c ** power.

    Equal lab shares keep one lab's look from standing for a class (ig, erythroblast
    and platelet exist only in PBC; Raabin's basophils come from one acquisition);
    the power trades rare-class recall against the common classes' precision.
    """
    w = np.zeros(len(cells.labels), np.float64)
    present = np.unique(cells.sources)
    for source in present:
        in_source = cells.sources == source
        classes = np.unique(cells.labels[in_source])
        mass = {c: float(np.sum(in_source & (cells.labels == c))) ** class_power for c in classes}
        total = sum(mass.values())
        for c in classes:
            members = in_source & (cells.labels == c)
            w[members] = mass[c] / total / members.sum() / len(present)
    return w / w.sum()


def train(
    args: argparse.Namespace,
    cells: CellSet,
    transform: InputTransform,
    stains_t: torch.Tensor,
) -> tuple[CellNet, list[dict[str, float]]]:
    images, labels = cells.images, cells.labels
    weights = sampling_weights(cells, args.class_power)
    g = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = build_model(args).to(memory_format=torch.channels_last)
    ema = None
    if args.ema > 0:
        ema = torch.optim.swa_utils.AveragedModel(
            model,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema),
            use_buffers=True,
        )
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.ndim <= 1 else decay).append(param)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        momentum=0.9,
        nesterov=True,
    )
    steps_per_epoch = len(images) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.25
    )
    cfg = AugmentConfig(
        strong=args.aug == "strong",
        stain_vector_max=args.stain_jitter_max,
        p_grey=args.grey,
        scale=args.scale,
        stain_amount=args.stain_amount,
        p_colour=args.p_colour,
        p_blur=args.p_blur,
        p_noise=args.p_noise,
        p_jpeg=args.p_jpeg,
        p_wide_scale=args.p_wide_scale,
        wide_scale=args.wide_scale,
        pad_background=args.pad_background,
        hue_rad=args.hue,
        saturation=args.saturation,
        contrast_low=args.contrast_low,
        channel_od=args.channel_od,
        p_lowres=args.p_lowres,
        blur_sigma=(0.3, args.blur_max),
    )
    history = []
    prefetch = ThreadPoolExecutor(max_workers=1) if args.prefetch else None
    for epoch in range(args.epochs):
        model.train()
        start = time.time()
        t_aug = t_norm = 0.0
        draws = rng.choice(len(images), steps_per_epoch * args.batch, p=weights)
        total, correct, loss_sum = 0, 0, 0.0
        batches = [
            np.sort(draws[step * args.batch : (step + 1) * args.batch])
            for step in range(steps_per_epoch)
        ]

        def prepare(idx: np.ndarray) -> tuple[torch.Tensor, float, float]:
            t0 = time.time()
            u8 = augment(torch.from_numpy(images[idx]), args.crop, stains_t, cfg, g)
            t1 = time.time()
            x = torch.from_numpy(transform.network_input(u8.numpy()))
            return x.contiguous(memory_format=torch.channels_last), t1 - t0, time.time() - t1

        # Optionally the next batch is augmented in a second thread while the network
        # trains (on 2 cores the threads mostly compete: measured no faster).
        pending = prefetch.submit(prepare, batches[0]) if prefetch else None
        for step, idx in enumerate(batches):
            if prefetch is not None and pending is not None:
                x, dt_aug, dt_norm = pending.result()
                if step + 1 < len(batches):
                    pending = prefetch.submit(prepare, batches[step + 1])
            else:
                x, dt_aug, dt_norm = prepare(idx)
            t_aug += dt_aug
            t_norm += dt_norm
            y = torch.from_numpy(labels[idx])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=args.smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            total += len(idx)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(idx)
        entry = {
            "epoch": epoch + 1,
            "loss": loss_sum / total,
            "train_acc": correct / total,
            "seconds": time.time() - start,
            "aug_s": t_aug,
            "norm_s": t_norm,
        }
        history.append(entry)
        _log.info(
            "epoch %d/%d loss %.4f acc %.4f %.0fs (aug %.0fs, norm %.0fs)",
            epoch + 1,
            args.epochs,
            entry["loss"],
            entry["train_acc"],
            entry["seconds"],
            t_aug,
            t_norm,
        )
    if prefetch is not None:
        prefetch.shutdown()
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())  # the averaged weights and BN stats
    model.eval()
    return model, history


def build_model(args: argparse.Namespace) -> CellNet:
    return CellNet(
        len(CLASSES),
        downsample=args.downsample,
        stem_kind=args.stem,
        stem=args.stem_width,
        widths=args.widths,
        norm=getattr(args, "norm", "bn"),
    )


def load_checkpoint(
    path: Path, args: argparse.Namespace
) -> tuple[dict[str, Any], argparse.Namespace, CellNet, InputTransform]:
    """A saved run: its record, its training arguments (where to read and write from
    ``args``), the network with its weights and the input transform it was trained with."""
    saved = torch.load(path, weights_only=False)
    run_args = argparse.Namespace(**{**vars(args), **saved["args"]})
    run_args.widths = tuple(run_args.widths)
    run_args.data, run_args.work, run_args.models = args.data, args.work, args.models
    model = build_model(run_args)
    model.load_state_dict(saved["state_dict"])
    model.eval()
    spec = saved["transform"]
    transform = InputTransform(
        crop_px=int(spec["crop_px"]),
        pixel_size_um=REFERENCE_UM,
        reference=stain.StainReference.from_spec(spec["stain"]),
        mean=tuple(spec["mean"]),  # type: ignore[arg-type]
        std=tuple(spec["std"]),  # type: ignore[arg-type]
    )
    return saved, run_args, model, transform


def training_command(run_args: argparse.Namespace) -> str:
    """The train_classifier.py command line that trains (and ships) this run from scratch:
    every training argument that differs from today's default, as a flag."""
    defaults = vars(parse_args([]))
    skip = {"data", "models", "work", "experiment", "evaluate", "from_checkpoint", "limit"}
    flags = []
    for key, value in vars(run_args).items():
        if key in skip or key not in defaults:
            continue
        default = defaults[key]
        if isinstance(default, tuple) or isinstance(value, (list, tuple)):
            value, default = tuple(value), tuple(default)
        if value == default:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag)
        elif isinstance(value, tuple):
            flags.append(f"{flag} {','.join(str(v) for v in value)}")
        else:
            flags.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join([os.path.relpath(Path(__file__), REPO), *flags])


def load_training_cells(args: argparse.Namespace) -> CellSet:
    """The training splits of ``args.sources``, in one array."""
    for source in args.sources:
        if source not in SOURCES:
            raise SystemExit(f"--sources: {source!r} is not one of {', '.join(SOURCES)}")
    cells = CellSet.concat([load_cells(args.data, source, "train") for source in args.sources])
    if args.limit:
        keep = np.random.default_rng(0).choice(len(cells.labels), args.limit, replace=False)
        cells = cells.subset(np.sort(keep))
    return cells


def ship_checkpoint(args: argparse.Namespace) -> int:
    """Ship a saved run as if its training had just ended (same export, checks and card)."""
    saved, run_args, model, transform = load_checkpoint(args.from_checkpoint, args)
    run_args.tta = args.tta
    run_args.experiment = None
    for key in ("history", "train_s", "load_s"):
        if key not in saved:
            raise SystemExit(f"{args.from_checkpoint}: no {key!r}; it predates --from-checkpoint")
    return evaluate_and_ship(
        run_args,
        model,
        transform,
        load_training_cells(run_args),
        name=f"{args.from_checkpoint.stem} shipped {time.strftime('%Y-%m-%d %H:%M')}",
        record={"history": saved["history"], "train_s": saved["train_s"]},
        wall_start=time.time() - saved["load_s"] - saved["train_s"],
        log_experiment=False,
    )


def evaluate_and_ship(
    args: argparse.Namespace,
    model: torch.nn.Module,
    transform: InputTransform,
    train_cells: CellSet,
    *,
    name: str,
    record: dict[str, Any],
    wall_start: float,
    log_experiment: bool,
) -> int:
    """Score a trained network on every check, log it, and (unless an experiment) ship it."""
    checks = load_checks(args.data, args.crop, args.lisc_boxes)
    result = {
        "name": name,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        **evaluate_all(args, model, transform, checks),
        "bccd_skipped": checks.bccd.skipped,
        **record,
    }
    log_result(result)
    if log_experiment:
        with (args.work / "experiments.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    if args.experiment:
        return 0

    from ship_classifier import ship

    ship(
        args=args,
        model=model,
        transform=transform,
        train_cells=train_cells,
        checks=checks,
        result=result,
        wall_start=wall_start,
        command=training_command(args),
    )
    return 0


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """Re-score a saved experiment on every check (e.g. one trained before TTA existed)."""
    _, run_args, model, transform = load_checkpoint(args.evaluate, args)
    run_args.lisc_boxes = args.lisc_boxes
    result = {
        "name": f"{args.evaluate.stem} (re-evaluated)",
        **evaluate_all(
            run_args,
            model,
            transform,
            load_checks(run_args.data, run_args.crop, run_args.lisc_boxes),
        ),
    }
    log_result(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.evaluate:
        return evaluate_checkpoint(args)
    if args.from_checkpoint:
        return ship_checkpoint(args)
    torch.manual_seed(args.seed)
    wall_start = time.time()
    args.work.mkdir(parents=True, exist_ok=True)

    train_cells = load_training_cells(args)
    transform = fit_transform(train_cells.images, args.stain, args.crop, args.seed)
    stains_t = stain_basis(train_cells.images, args.crop)
    _log.info("input transform: %s", json.dumps(transform.to_spec()))
    load_s = time.time() - wall_start

    model, history = train(args, train_cells, transform, stains_t)
    train_s = time.time() - wall_start - load_s
    torch.save(
        {
            "state_dict": model.state_dict(),
            "transform": transform.to_spec(),
            "args": vars(args),
            "history": history,
            "train_s": train_s,
            "load_s": load_s,
        },
        args.work / f"{args.experiment or 'classifier'}.pt",
    )

    return evaluate_and_ship(
        args,
        model,
        transform,
        train_cells,
        name=args.experiment or f"shipped {time.strftime('%Y-%m-%d %H:%M')}",
        record={"load_s": load_s, "train_s": train_s, "history": history},
        wall_start=wall_start,
        log_experiment=True,
    )


if __name__ == "__main__":
    sys.exit(main())
