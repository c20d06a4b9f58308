#!/usr/bin/env python3
"""Plots a soak run (`flight-companion hil soak`): RSS, open descriptors, threads and CPU
over time, with every fault and e-stop marked.

    .venv/bin/python hil/soak/plot.py OUT_DIR PNG [--title TEXT]

OUT_DIR is the soak's `--out` (soak.csv, faults.csv, estops.csv).
"""
import argparse
import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FAULT_COLOURS = {
    "broker_killed": "tab:red",
    "autopilot_link_cut": "tab:orange",
    "noisy_line": "tab:olive",
    "daemon_stopped": "tab:purple",
    "ground_link_faded": "tab:blue",
    "bridge_unplugged": "tab:brown",
}


def rows(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("png")
    parser.add_argument("--title", default="flight-companion soak")
    args = parser.parse_args()

    samples = rows(os.path.join(args.out_dir, "soak.csv"))
    faults = rows(os.path.join(args.out_dir, "faults.csv"))
    estops = rows(os.path.join(args.out_dir, "estops.csv"))
    if len(samples) < 2:
        raise SystemExit(f"{args.out_dir}/soak.csv has fewer than two samples")
    t_min = [float(s["t_s"]) / 60 for s in samples]
    rss_mb = [int(s["rss_kb"]) / 1024 for s in samples]
    fds = [int(s["fds"]) for s in samples]
    threads = [int(s["threads"]) for s in samples]
    cpu = [float(s["cpu_s"]) for s in samples]
    # Older runs have no queue columns; they are drawn with three panels.
    has_queues = "queue_depth_total" in samples[0]
    queue_total = [float(s.get("queue_depth_total") or 0) for s in samples]
    queue_fill_pct = [100 * float(s.get("queue_fill_max") or 0) for s in samples]
    # CPU % of one core between two samples.
    cpu_pct = [0.0] + [
        100 * (cpu[i] - cpu[i - 1]) / max(60 * (t_min[i] - t_min[i - 1]), 1e-9)
        for i in range(1, len(cpu))
    ]
    # Samples, faults and e-stops share one clock: seconds since the load started.
    offset_s = 0.0

    panels = 4 if has_queues else 3
    fig, axes = plt.subplots(panels, 1, figsize=(11, 2.7 * panels), sharex=True)
    axes[0].plot(t_min, rss_mb, color="black", lw=1.2)
    axes[0].set_ylabel("RSS (MiB)")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t_min, fds, color="tab:green", lw=1.2, label="open fds")
    axes[1].plot(t_min, threads, color="tab:gray", lw=1.0, ls="--", label="threads")
    axes[1].set_ylabel("count")
    axes[1].set_ylim(bottom=0)
    axes[1].legend(loc="lower right", fontsize=8)
    axes[2].plot(t_min, cpu_pct, color="tab:cyan", lw=1.2)
    axes[2].set_ylabel("CPU (% of a core)")
    axes[2].set_ylim(bottom=0)
    if has_queues:
        axes[3].plot(t_min, queue_total, color="tab:purple", lw=1.2, label="messages queued")
        axes[3].set_ylabel("queued (messages)")
        axes[3].set_ylim(bottom=0)
        fill = axes[3].twinx()
        fill.plot(t_min, queue_fill_pct, color="tab:orange", lw=0.8, ls="--")
        fill.set_ylabel("fullest queue (%)", color="tab:orange")
        fill.set_ylim(0, 100)
    axes[-1].set_xlabel("minutes since the load started")

    seen = set()
    for f in faults:
        start = (float(f["applied_s"]) - offset_s) / 60
        end = (float(f["undone_s"]) - offset_s) / 60
        kind = f["fault"]
        colour = FAULT_COLOURS.get(kind, "tab:pink")
        for ax in axes:
            ax.axvspan(start, end, color=colour, alpha=0.18, lw=0)
        if kind not in seen:
            axes[0].axvspan(start, end, color=colour, alpha=0.18, lw=0, label=kind)
            seen.add(kind)
    for e in estops:
        at = (float(e["at_s"]) - offset_s) / 60
        for ax in axes:
            ax.axvline(at, color="red", lw=0.8, ls=":")
    if estops:
        axes[0].axvline(float("nan"), color="red", lw=0.8, ls=":", label="e-stop")
    axes[0].legend(loc="lower right", fontsize=7, ncol=4)
    axes[0].set_title(args.title)
    fig.tight_layout()
    fig.savefig(args.png, dpi=90)
    print(f"plot: {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
