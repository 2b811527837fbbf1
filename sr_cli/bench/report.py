"""``srx bench``'s report on the console: the stage table, throughput, FLOP/s, memory, peer and scaling lines."""

from __future__ import annotations


def print_report(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(markup=False, emoji=False, highlight=False)  # model names and paths are printed verbatim
    table = Table(title=f"{r['model']} on {r['device']} ({r['dtype']}): {r['input'][0]}² → "
                        f"{r['output'][0]}x{r['output'][1]}, {r['tiles']} tile(s) of {r['tile']} (batch {r['tile_batch']})")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for stage, s in r["stages_s"].items():
        table.add_row(stage, f"{s:.3f}", f"{100 * s / r['total_s']:.1f}%")
    table.add_row("total", f"{r['total_s']:.3f}", "100%")
    console.print(table)
    console.print(f"engine overhead (all but model forwards): {100 * r['engine_overhead_fraction']:.1f}% "
                  f"({100 * r['engine_overhead_fraction_without_io']:.1f}% without reading and writing) · "
                  f"{r['images_per_s']:.3f} images/s · {r['megapixels_per_s']:.2f} MP/s")
    if r.get("achieved_tflops"):
        frac = f" ({100 * r['fraction_of_peak']:.1f}% of the {r['peak_tflops']:.0f} TFLOP/s peak)" \
            if r.get("fraction_of_peak") else ""
        console.print(f"model: {r['flops_per_tile'] / 1e12:.3f} TFLOP per tile · {r['model_ms_per_tile']:.1f} ms "
                      f"per tile · achieved {r['achieved_tflops']:.2f} TFLOP/s{frac}")
    for tb, row in r.get("sweep", {}).items():
        console.print(f"  tile batch {tb}: {row['model_ms_per_tile']:.1f} ms per tile, total {row['total_s']:.3f} s"
                      + (f", peak GPU {row['peak_gpu_mb']:.0f} MiB" if row.get("peak_gpu_mb") is not None else ""))
    gpu = f" · peak GPU {r['peak_gpu_mb']:.0f} MiB" if r.get("peak_gpu_mb") is not None else ""
    console.print(f"peak host RSS {r['peak_host_rss_mb']:.0f} MiB{gpu}")
    if "peer" in r:
        p = r["peer"]
        console.print(f"peer: {p}" if "skipped" in p else
                      f"reference-style loop {p['reference_s']:.3f} s vs srx {p['srx_s']:.3f} s: {p['speedup']:.2f}x")
    if "memory_scaling" in r:
        m = r["memory_scaling"]
        console.print(f"memory scaling {m['outputs'][0]} → {m['outputs'][1]}: host peak "
                      f"{m['peak_host_rss_mb'][0]:.0f} → {m['peak_host_rss_mb'][1]:.0f} MiB "
                      f"(+{m['host_growth_mb']:.0f} MiB)" +
                      (f", GPU +{m['gpu_growth_mb']:.0f} MiB" if "gpu_growth_mb" in m else ""))
