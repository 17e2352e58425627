"""latest.png: one panel per scenario that ran, medians with min-max whiskers."""

from __future__ import annotations

from pathlib import Path


def draw(doc: dict, summary: dict, path: Path) -> str | None:
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed"
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = [p for p in (_s1_panel, _s2_panel, _s3_panel, _sweep_panel) if p(summary, None)]
    if not panels:
        return "nothing to draw"
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(max(7.0, 6.0 * cols), 4.4 * rows + 0.4),
                             squeeze=False)
    for panel, ax in zip(panels, axes.flat, strict=False):
        panel(summary, ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"txingest benchmarks ({doc['info']['mode']}, {doc['info']['started']}, "
                 f"{doc['info']['machine']['nproc']} cores, shared)\n"
                 "median of the runs that passed the gate; whiskers: min-max", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _bars(ax, summary: dict, scenario: str, names: list[tuple[str, str]], metric: str,
          title: str, ylabel: str) -> bool:
    rows = [(label, summary[key][metric]) for key_variant, label in names
            for key in summary if key[0] == scenario and key[2] == key_variant
            and metric in summary[key]]
    if ax is None or not rows:
        return bool(rows)
    labels = [label for label, _ in rows]
    med = [s["median"] for _, s in rows]
    err = [[s["median"] - s["min"] for _, s in rows], [s["max"] - s["median"] for _, s in rows]]
    ax.bar(labels, med, yerr=err, capsize=4, color="#4c72b0")
    for i, v in enumerate(med):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelsize=8, rotation=20)
    return True


def _s1_panel(summary: dict, ax) -> bool:
    names = [("naive", "naive"), ("service", "service"), ("service_n8", "N=8"),
             ("service_n32", "N=32"), ("service_n128", "N=128"), ("service_dedup", "DEDUP=url"),
             ("service_probe", "service\n(instrumented)"), ("upper_bound", "U (at least once)"),
             ("r2", "R2 ceiling"), ("kstreams", "Kafka Streams EOS")]
    return _bars(ax, summary, "S1", names, "files_per_s",
                 "S1: small files, 50 ms, 8 partitions",
                 "files / s (one transaction each but N=...)")


def _s2_panel(summary: dict, ax) -> bool:
    names = [("service", "service"), ("upper_bound", "U (at least once)"),
             ("r1", "R1 raw produce"), ("peer", "Quix Streams EOS"),
             ("proposed", "service + proposed"), ("kstreams", "Kafka Streams EOS")]
    return _bars(ax, summary, "S2", names, "msgs_per_s", "S2: 2-5 MB files, 4 partitions",
                 "output messages / s")


def _sweep_panel(summary: dict, ax) -> bool:
    names = ([(f"r2_backoff_{ms}", f"{ms} ms") for ms in (100, 20, 5, 1)]
             + [(f"r2_offsets_first_backoff_{ms}", f"offsets 1st\n{ms} ms") for ms in (100, 20, 1)])
    return _bars(ax, summary, "R2", names, "files_per_s",
                 "R2 by retry_backoff_ms (8 partitions)", "transactions / s")


def _s3_panel(summary: dict, ax) -> bool:
    points = {v: sorted((k[1], m["files_per_s"]) for k, m in summary.items()
                        if k[0] == "S3" and k[2] == v and "files_per_s" in m)
              for v in ("service", "r2")}
    if ax is None or not points["service"]:
        return bool(points["service"])
    for variant, label in (("service", "service"), ("r2", "R2 ceiling")):
        if points[variant]:
            xs = [p for p, _ in points[variant]]
            ax.errorbar(xs, [s["median"] for _, s in points[variant]],
                        yerr=[[s["median"] - s["min"] for _, s in points[variant]],
                              [s["max"] - s["median"] for _, s in points[variant]]],
                        marker="o", capsize=4, label=label)
    xs = [p for p, _ in points["service"]]
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_title("S3: small files, 10 ms, by partitions", fontsize=10)
    ax.set_xlabel("partitions")
    ax.set_ylabel("transactions / s")
    ax.legend(fontsize=8)
    return True
