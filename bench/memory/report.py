"""The memory benchmark's table (stdout, docs) and its JSON file."""

from __future__ import annotations

from pathlib import Path

import orjson

COLUMNS = (  # (heading, result key, format)
    ("scenario", "scenario", "{}"),
    ("peak RSS MB (VmHWM)", "peak_rss_mb", "{:,.0f}"),
    ("max sampled RSS MB", "max_sampled_rss_mb", "{:,.0f}"),
    ("output records", "output_records", "{:,}"),
    ("seconds", "seconds", "{:.1f}"),
    ("output records/s", "records_per_s", "{:,.0f}"),
    ("loop lag max s", "loop_lag_max_s", "{}"),
    ("counted peak MB", "counted_peak_mb", "{:,}"),
    ("exit code", "exit_code", "{}"),
    ("complete", "ok", "{}"),
)


def _cell(result: dict, key: str, form: str) -> str:
    value = result.get(key)
    if value is None:
        return "-"
    if isinstance(value, str):  # "n/a", "<=0.5": already shown
        return value
    if key == "ok":
        return "yes" if value else "NO"
    return form.format(value)


def table(results: list[dict], header: bool = True) -> str:
    """A Markdown table, a row per scenario."""
    rows = [[_cell(r, key, form) for _, key, form in COLUMNS] for r in results]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    if header:
        lines[:0] = ["| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
                     "|" + "|".join("---" for _ in COLUMNS) + "|"]
    return "\n".join(lines)


def write_json(out: Path, stamp: str, info: dict, results: list[dict]) -> Path:
    """<out>/<stamp>.json and <out>/latest.json (a copy)."""
    out.mkdir(parents=True, exist_ok=True)
    doc = orjson.dumps({"info": info, "results": results}, option=orjson.OPT_INDENT_2)
    path = out / f"{stamp}.json"
    path.write_bytes(doc)
    (out / "latest.json").write_bytes(doc)
    return path
