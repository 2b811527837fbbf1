"""Results out: the terminal table (ours beside the papers' numbers), JSON and CSV files."""

from __future__ import annotations

import csv
import io
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..io.imageio import write_atomic
from .metrics import METRICS
from .runner import SystemResult

# srx model name -> the method's name in paper_numbers.csv (the papers' tables).
PAPER_METHODS = {
    "osediff": "OSEDiff-s1",
    "sinsr": "SinSR-s1",
    "resshift": "ResShift-s15",
    "hf-diff": "HF-Diff-s1",
    "dfosd": "DFOSD",
    "vpd-sr": "VPD-SR-s1",
    "realesrgan-x4plus": "Real-ESRGAN",  # OSEDiff's Table 1 baseline row
}


@lru_cache(maxsize=1)
def paper_numbers() -> list[dict[str, str]]:
    text = resources.files("sr_cli.evaluate").joinpath("paper_numbers.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def paper_values(system: str, paper_dataset: str | None) -> tuple[str | None, dict[str, float], str | None]:
    """(method, {metric: value}, source) the papers report for ``system`` on ``paper_dataset``."""
    method = PAPER_METHODS.get(Path(system).name.lower())
    if not method or not paper_dataset:
        return method, {}, None
    rows = [r for r in paper_numbers() if r["method"] == method and r["dataset"].lower() == paper_dataset.lower()]
    return method, {r["metric"]: float(r["value"]) for r in rows}, (rows[0]["source"] if rows else None)


def _fmt(metric: str, value: float | None, sign: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:{sign}.2f}" if metric in ("psnr", "fid", "musiq") else f"{value:{sign}.4f}"


def summary_table(results: list[SystemResult], metrics: list[str], paper_dataset: str | None,
                  unavailable: dict[str, str]):
    """A rich Table: one row per metric; ours per system, then the paper's value and the difference."""
    from rich.table import Table
    from rich.text import Text

    main = results[0]
    method, paper, source = paper_values(main.system, paper_dataset)
    title = f"{main.dataset}: {len([r for r in main.images if not r.error])} images"
    if paper:
        caption = f"paper: {method} ({source})"
    elif paper_dataset:  # a benchmark of the papers, but no published numbers of this system are recorded
        caption = f"no paper numbers recorded for {Path(main.system).name} on {paper_dataset}"
    else:
        caption = None
    # Dataset, folder and model names are user text: plain Text, never read as rich markup ("run[b]").
    table = Table(title=Text(title), caption=Text(caption) if caption else None)
    table.add_column("metric")
    for r in results:
        table.add_column(Text(Path(r.system).name), justify="right")
    if paper:
        table.add_column(Text(f"paper {method}"), justify="right")
        table.add_column("Δ", justify="right")
    means = [r.means() for r in results]
    for name in metrics:
        arrow = "↓" if METRICS[name].lower_better else "↑"
        row = [f"{name} {arrow}"]
        for m in means:
            row.append(_fmt(name, m.get(name)) if name not in unavailable else "n/a")
        if paper:
            ours = means[0].get(name)
            theirs = paper.get(name)
            row.append(_fmt(name, theirs))
            row.append(_fmt(name, ours - theirs, "+") if ours is not None and theirs is not None else "—")
        table.add_row(*row)
    return table


def report_json(results: list[SystemResult], paper_dataset: str | None, unavailable: dict[str, str]) -> dict:
    main = results[0]
    method, paper, source = paper_values(main.system, paper_dataset)
    return {
        "dataset": main.dataset,
        "systems": [r.to_json() for r in results],
        "paper": {"method": method, "source": source, "values": paper} if paper else None,
        "unavailable_metrics": unavailable,
    }


def report_csv(results: list[SystemResult], metrics: list[str]) -> str:
    """One row per (system, image) plus a ``mean`` row per system; set metrics (FID) only on the mean row."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["system", "image", *metrics, "error"])
    for r in results:
        for img in r.images:
            writer.writerow([r.system, img.name, *[_csv(img.values.get(m)) for m in metrics], img.error or ""])
        means = r.means()
        writer.writerow([r.system, "mean", *[_csv(means.get(m)) for m in metrics], ""])
    return buf.getvalue()


def _csv(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def write_text(dest: Path, text: str) -> None:
    write_atomic(Path(dest), text.encode("utf-8"), overwrite=True)


def write_json(dest: Path, doc: dict) -> None:
    write_text(dest, json.dumps(doc, indent=2) + "\n")
