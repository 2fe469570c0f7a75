"""Decode rate of the scanner simulator's reading situations (the issue's target: ≥ 99.5 %).

For every named preset, draw N syntactically valid codes — static, dynamic and combined
on phones, static on stickers (only static codes are printed) — show each to the camera
with its own seed, decode it with zxing-cpp, and count reads, wrong reads and decode time.
The baseline is the same codes decoded straight from the platform's unperturbed PNGs, so
``ms_ratio`` says what the perturbations cost the decoder. No server is needed.

    .venv/bin/python bench/scanner.py            # 200 codes per preset
    .venv/bin/python bench/scanner.py --quick    # 5 per preset, for CI

Prints JSON on stdout and a table on stderr. Exits 1 when any read differs from the
issued code, or (full run) when the total decode rate is below the target.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from cardcore.codes import CodeText  # noqa: E402
from mocks.scanner import PRESETS, Medium, Preset, camera_view, code_picture, decode  # noqa: E402

TARGET_SUCCESS_PCT = 99.5
FULL_SAMPLES = 200
QUICK_SAMPLES = 5
KINDS_BY_MEDIUM: dict[Medium, tuple[str, ...]] = {
    "phone": ("static", "dynamic", "combined"),
    "sticker": ("static",),
}


def issued_code(sample: int, kind: str) -> str:
    """A well-formed code of this kind with random fields, the same for a sample in every preset."""
    rng = random.Random(f"code:{sample}")
    vuid = f"{rng.getrandbits(256):064X}"
    if kind == "static":
        return CodeText.static(vuid).format()
    valid = f"{rng.getrandbits(128):032X}"
    if kind == "dynamic":
        return CodeText.dynamic(vuid, valid).format()
    # A channel payment code: 18 digits, WeChat's start 10–15, Alipay's 25–30.
    prefix = rng.choice((*range(10, 16), *range(25, 31)))
    return CodeText.dynamic(vuid, valid, token=f"{prefix}{rng.randrange(10**16):016d}").format()


def codes_for(medium: Medium, samples: int) -> list[str]:
    kinds = KINDS_BY_MEDIUM[medium]
    return [issued_code(sample, kinds[sample % len(kinds)]) for sample in range(samples)]


def summary(name: str, attempts: int, decoded: int, mismatches: int, times_ms: list[float]) -> dict:
    ordered = sorted(times_ms)
    return {
        "preset": name,
        "attempts": attempts,
        "decoded": decoded,
        "success_pct": round(100 * decoded / attempts, 2),
        "mismatches": mismatches,
        "mean_ms": round(sum(ordered) / len(ordered), 3),
        "p95_ms": round(ordered[math.ceil(0.95 * len(ordered)) - 1], 3),
    }


def run_preset(preset: Preset, samples: int) -> dict:
    decoded = mismatches = 0
    times_ms = []
    for seed, text in enumerate(codes_for(preset.medium, samples)):
        reading = decode(camera_view(code_picture(text, preset.medium), preset, seed))
        times_ms.append(reading.decode_ms)
        decoded += reading.decoded
        mismatches += reading.text not in (None, text)
    return summary(preset.name, samples, decoded, mismatches, times_ms)


def run_baseline(samples: int) -> dict:
    """The unperturbed pictures of the same codes, on both media."""
    decoded = mismatches = 0
    times_ms = []
    for medium in KINDS_BY_MEDIUM:
        for text in codes_for(medium, samples):
            reading = decode(code_picture(text, medium))
            times_ms.append(reading.decode_ms)
            decoded += reading.decoded
            mismatches += reading.text not in (None, text)
    return summary("baseline", 2 * samples, decoded, mismatches, times_ms)


def print_table(result: dict) -> None:
    table = Table(
        title=f"Scanner simulator decode rate, {result['samples_per_preset']} codes per preset",
        caption="baseline: the same codes decoded from unperturbed pictures; ms ratio = mean ms / baseline's",
    )
    table.add_column("preset")
    for column in ("attempts", "decoded", "success %", "mismatches", "mean ms", "p95 ms", "ms ratio"):
        table.add_column(column, justify="right")
    baseline = result["baseline"]
    for row in (*result["presets"], baseline):
        counts = (row["attempts"], row["decoded"], f"{row['success_pct']:.2f}", row["mismatches"])
        times = (row["mean_ms"], row["p95_ms"], row.get("ms_ratio", 1.0))
        table.add_row(row["preset"], *map(str, counts), *(f"{value:.2f}" for value in times))
    total = result["total"]
    counts = (total["attempts"], total["decoded"], f"{total['success_pct']:.2f}", total["mismatches"])
    table.add_row("total", *map(str, counts), "", "", "", style="bold")
    # Logs and CI are not terminals: give them a width that fits the table.
    Console(stderr=True, width=None if sys.stderr.isatty() else 120).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SAMPLES} codes per preset (CI)")
    parser.add_argument("--samples", type=int, help=f"codes per preset (default {FULL_SAMPLES})")
    args = parser.parse_args(argv)
    samples = args.samples or (QUICK_SAMPLES if args.quick else FULL_SAMPLES)

    baseline = run_baseline(samples)
    rows = []
    for preset in PRESETS.values():
        row = run_preset(preset, samples)
        row["ms_ratio"] = round(row["mean_ms"] / baseline["mean_ms"], 2)
        rows.append(row)
    attempts = sum(row["attempts"] for row in rows)
    decoded = sum(row["decoded"] for row in rows)
    total = {
        "attempts": attempts,
        "decoded": decoded,
        "success_pct": round(100 * decoded / attempts, 2),
        "mismatches": sum(row["mismatches"] for row in rows),
    }
    problems = []
    if total["mismatches"] or baseline["mismatches"]:
        problems.append("a decoded text differs from the issued code")
    if not args.quick and total["success_pct"] < TARGET_SUCCESS_PCT:
        problems.append(f"total decode rate {total['success_pct']} % is below {TARGET_SUCCESS_PCT} %")
    result = {
        "benchmark": "scanner",
        "mode": "quick" if args.quick else "full",
        "samples_per_preset": samples,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "zxing_cpp": version("zxing-cpp"),
            "pillow": version("pillow"),
        },
        "target_success_pct": TARGET_SUCCESS_PCT,
        "baseline": baseline,
        "presets": rows,
        "total": total,
        "passed": not problems,
        "problems": problems,
    }
    print(json.dumps(result, ensure_ascii=False, indent=2))
    print_table(result)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
