"""Flags: what a clinician must know before using a differential, in plain words.

Each flag has a stable ``code`` for machines and a ``message`` written for a
clinician, with the numbers that triggered it. Thresholds come from
``storage.flags`` in the configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.report.config import FlagConfig
from agent.report.model import Flag


@dataclass(frozen=True)
class FlagInputs:
    """The numbers the flags look at."""

    wbc_counted: int
    target_wbc: int
    unidentified: int
    ig_percent: float | None
    nrbc_per_100_wbc: float | None
    nrbc: int
    platelet_clumps: int
    fields: int
    fields_out_of_focus: int
    hardware_faults: Sequence[str] = ()


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def hardware_fault_flag(fault: str) -> Flag:
    """The flag for one hardware fault the daemon met during the sample."""
    return Flag(
        code="hardware_fault",
        message=(
            f"The analyzer reported a hardware problem during this sample: {fault}. "
            "The result may be incomplete; repeat the sample if in doubt."
        ),
    )


def aborted_flag(reason: str) -> Flag:
    return Flag(
        code="aborted",
        message=f"No result: the analysis of this sample was stopped ({reason}). Repeat the sample.",
    )


def evaluate_flags(inputs: FlagInputs, config: FlagConfig) -> list[Flag]:
    """The flags of a finished sample, most important first."""
    flags: list[Flag] = [hardware_fault_flag(fault) for fault in inputs.hardware_faults]
    if inputs.wbc_counted == 0:
        flags.append(
            Flag(
                code="no_white_cells",
                message=(
                    "No white cells could be identified on this slide, so no differential "
                    "can be given. Check the smear and its staining, and repeat."
                ),
            )
        )
    elif inputs.wbc_counted < inputs.target_wbc:
        flags.append(
            Flag(
                code="target_not_reached",
                message=(
                    f"Only {inputs.wbc_counted} white cells could be counted instead of "
                    f"{inputs.target_wbc}. The percentages are less precise than usual: "
                    "use the 95% confidence intervals, or repeat with a thicker smear."
                ),
            )
        )
    events = inputs.wbc_counted + inputs.unidentified
    if events > 0 and inputs.unidentified > 0:
        share = 100.0 * inputs.unidentified / events
        if share > config.unidentified_percent:
            flags.append(
                Flag(
                    code="many_unidentified",
                    message=(
                        f"{inputs.unidentified} of {events} white cells ({_fmt(share)}%) could "
                        "not be identified by the analyzer; they are left out of the "
                        "percentages. Review the cell images before relying on the "
                        "differential: abnormal cells (e.g. blasts or atypical lymphocytes) "
                        "may be among them."
                    ),
                )
            )
    if inputs.fields > 0:
        bad = inputs.fields_out_of_focus / inputs.fields
        if inputs.fields_out_of_focus > 0 and bad > config.focus_failure_fraction:
            flags.append(
                Flag(
                    code="focus_failures",
                    message=(
                        f"{inputs.fields_out_of_focus} of {inputs.fields} scanned fields "
                        f"({_fmt(100.0 * bad)}%) were out of focus. Cell identification may "
                        "be less reliable; review the cell images or repeat the scan."
                    ),
                )
            )
    ig = inputs.ig_percent
    if ig is not None and ig > 0 and ig >= config.ig_percent:
        flags.append(
            Flag(
                code="ig_present",
                message=(
                    f"Immature granulocytes are present ({_fmt(ig)}% of "
                    "white cells). This can accompany infection, inflammation, pregnancy "
                    "or a bone-marrow disorder; consider a manual smear review."
                ),
            )
        )
    nrbc = inputs.nrbc_per_100_wbc
    if inputs.nrbc > 0 and nrbc is not None and nrbc >= config.nrbc_per_100_wbc:
        flags.append(
            Flag(
                code="nrbc_present",
                message=(
                    f"Nucleated red cells are present ({_fmt(nrbc)} "
                    "per 100 white cells). They are not normally seen in adult blood; a "
                    "white-cell count from a counter may need correcting for them."
                ),
            )
        )
    if inputs.platelet_clumps >= config.platelet_clumps:
        flags.append(
            Flag(
                code="platelet_clumps",
                message=(
                    f"{inputs.platelet_clumps} platelet clumps were seen. Clumping can make "
                    "a counter's platelet count falsely low; check the sample for clots."
                ),
            )
        )
    return flags


ABSOLUTE_COUNTS_NOTE = (
    "Absolute counts are not available: this analyzer gives proportions only. Multiply "
    "each percentage by a white-cell count from a haematology counter to obtain them."
)
