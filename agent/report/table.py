"""A report as a fixed-width table for terminals (``demo``, logs, support calls)."""

from __future__ import annotations

import textwrap
from datetime import datetime

from agent.report.classes import DISPLAY_NAMES, WBC_CLASSES
from agent.report.model import Report

WIDTH = 78


def _time(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%SZ") if t is not None else "-"


def _pct(value: float | None) -> str:
    return f"{value:5.1f}" if value is not None else "    -"


def render_table(report: Report) -> str:
    """The report as text: differential, other counts, flags, timing and provenance."""
    lines: list[str] = []
    head = f"Sample {report.sample_id}"
    if report.accession:
        head += f"  (accession {report.accession})"
    status = f"{report.status.upper()}  #{report.sequence}"
    lines.append(head + status.rjust(max(1, WIDTH - len(head))))
    lines.append(f"Result {report.result_id}  issued {_time(report.provenance.issued_at)}")
    if report.supersedes:
        lines.append(f"Replaces {report.supersedes}")
    if report.reason:
        lines.append(f"Aborted: {report.reason}")
    lines.append("")

    truth_total = 0
    if report.truth is not None:
        truth_total = sum(report.truth.get(c, 0) for c in WBC_CLASSES)
    with_truth = report.truth is not None and truth_total > 0
    if report.differential:
        header = f"{'Class':<24}{'Count':>6}{'%':>8}   {'95% CI':<15}"
        if with_truth:
            header += f"{'Truth %':>9}{'Diff':>8}"
        lines.append(header)
        lines.append("-" * len(header))
        for c in WBC_CLASSES:
            r = report.differential[c]
            ci = f"{r.ci95[0]:5.1f} - {r.ci95[1]:5.1f}" if r.ci95 is not None else "      -"
            row = f"{DISPLAY_NAMES[c]:<24}{r.count:>6}{_pct(r.percent):>8}   {ci:<15}"
            if with_truth and report.truth is not None:
                truth_pct = 100.0 * report.truth.get(c, 0) / truth_total
                diff = f"{r.percent - truth_pct:+7.1f}" if r.percent is not None else "      -"
                row += f"{truth_pct:>9.1f}{diff:>8}"
            lines.append(row)
        lines.append("-" * len(header))
    lines.append(
        f"{'Identified white cells':<24}{report.wbc_counted:>6}  (target {report.target_wbc})"
    )
    events = report.wbc_counted + report.unidentified
    unid = f"{'Unidentified':<24}{report.unidentified:>6}"
    if report.unidentified_percent_of_events is not None:
        unid += f"  ({report.unidentified_percent_of_events:.1f}% of {events} white-cell events)"
    lines.append(unid)
    nrbc = f"{'Nucleated red cells':<24}{report.nrbc:>6}"
    if report.nrbc_per_100_wbc is not None:
        nrbc += f"  ({report.nrbc_per_100_wbc:.1f} per 100 white cells)"
    lines.append(nrbc)
    lines.append(f"{'Platelet clumps':<24}{report.platelet_clumps:>6}")
    if report.artefacts:
        lines.append(f"{'Artefacts (reviewer)':<24}{report.artefacts:>6}")
    lines.append(
        f"{'Fields scanned':<24}{report.fields:>6}  ({report.fields_out_of_focus} out of focus)"
    )
    lines.append(
        f"{'Edge cells skipped':<24}{report.edge_cells_skipped:>6}  "
        f"({report.duplicates_merged} duplicate views merged)"
    )
    if with_truth:
        lines.append(f"{'Truth (in scanned area)':<24}{truth_total:>6}  white cells")
    lines.append("Percentages are per 100 identified white cells.")
    lines.append("")

    lines.append("Flags:" if report.flags else "Flags: none")
    for flag in report.flags:
        lines.extend(
            textwrap.wrap(
                f"[{flag.code}] {flag.message}",
                WIDTH,
                initial_indent="  ",
                subsequent_indent="    ",
                break_on_hyphens=False,
            )
        )
    t = report.timings
    lines.append("")
    lines.append(
        f"Timing: total {t.total_s:.1f} s (acquisition {t.acquisition_s:.1f} s, "
        f"analysis {t.analysis_s:.1f} s, waiting {t.waiting_s:.1f} s)"
    )
    p = report.provenance
    models = ", ".join(f"{m.name} {m.version} ({m.sha256[:12]})" for m in p.models) or "none"
    lines.extend(
        textwrap.wrap(
            f"Provenance: {p.software} {p.software_version} on {p.device_id}; "
            f"config {p.config_hash[:12]}; models {models}; started {_time(p.started_at)}, "
            f"finished {_time(p.finished_at)}",
            WIDTH,
            subsequent_indent="  ",
            break_on_hyphens=False,
        )
    )
    for entry in report.audit:
        if entry.action == "reclassify":
            what = f"cell {entry.cell_id}: {entry.old_label} -> {entry.new_label}"
        else:
            what = "signed off (final)"
        lines.append(f"Review: {_time(entry.at)} {entry.reviewer}: {what}")
    return "\n".join(lines) + "\n"
