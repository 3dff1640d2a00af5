"""PNG figures of a results dict (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["make_plots"]

E2E_BARS = (
    ("peer", "dicomweb-client + pydicom"),
    ("peer_identity", "peer, identity"),
    ("il_default", "imageloader default"),
    ("il_w2", "imageloader, identity"),
    ("fetch_gzip", "fetch ceiling (gzip)"),
    ("fetch_identity", "fetch ceiling (identity)"),
    ("decode", "decode ceiling"),
)


def _bars(ax: Any, groups: list[str], series: list[tuple[str, list[float]]]) -> None:
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for i, (label, values) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, groups)
    ax.grid(axis="y", alpha=0.3)


def _e2e(results: dict[str, Any], path: Path) -> None:
    e2e = results["e2e"]
    names = list(e2e)
    fig, ax = plt.subplots(figsize=(12, 5))
    _bars(ax, names, [(label, [e2e[n]["fps"][k] for n in names]) for k, label in E2E_BARS])
    ax.set_yscale("log")
    ax.set_ylabel("frames/s (log)")
    ax.set_title("WADO-RS frames → numpy, 512×512 CT: pipelines and their ceilings")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _scaling(results: dict[str, Any], path: Path) -> None:
    decode = results["decode_scaling"]
    names = list(decode)
    keys = [k for k in next(iter(decode.values()))["fps"] if k.startswith("pool_")]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    bars = [(f"DecodePool({k.split('_')[1]})", [decode[n]["fps"][k] for n in names]) for k in keys]
    bars += [("decode_frame in-process", [decode[n]["fps"]["in_process"] for n in names])]
    bars += [("pydicom in-process", [decode[n]["fps"]["pydicom"] for n in names])]
    _bars(axes[0], names, bars)
    axes[0].set_yscale("log")
    axes[0].set_title("decode only: frames/s by worker count")
    axes[0].legend(fontsize=8)
    e2e = results["e2e"]
    _bars(
        axes[1],
        list(e2e),
        [
            ("max_web_workers=1", [e2e[n]["fps"]["il_w1"] for n in e2e]),
            ("max_web_workers=2", [e2e[n]["fps"]["il_w2"] for n in e2e]),
        ],
    )
    axes[1].set_title("end to end (identity): frames/s by max_web_workers")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _priorities(results: dict[str, Any], path: Path) -> None:
    p = results["priorities"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in (("idle_ms", "idle loader"), ("busy_ms", "during a PREFETCH")):
        values = np.sort(p[key])
        ax.plot(values, np.linspace(0, 1, len(values)), label=label)
    ax.axhline(0.95, color="grey", lw=0.5, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("INTERACTION load latency, ms (log)")
    ax.set_ylabel("fraction of loads")
    ax.set_title(f"INTERACTION latency: p95 busy/idle = {p['p95_ratio']:.2f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _memory(results: dict[str, Any], path: Path) -> None:
    mem = results["memory"]
    names = list(mem)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _bars(
        ax,
        names,
        [
            ("cache limit", [mem[n]["cache_limit_mib"] for n in names]),
            ("peak RSS main", [mem[n]["peak_main_mib"] for n in names]),
            ("peak RSS workers", [mem[n]["peak_workers_mib"] for n in names]),
            ("peak RSS total", [mem[n]["peak_total_mib"] for n in names]),
        ],
    )
    for i, n in enumerate(names):
        ax.hlines(mem[n]["cache_limit_mib"] + 100, i - 0.4, i + 0.4, colors="red", lw=1)
    ax.set_ylabel("MiB")
    ax.set_title("prefetching a series twice the cache (red: limit + 100 MB)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def make_plots(results: dict[str, Any], out_dir: Path, stamp: str) -> list[Path]:
    """Write every figure whose data is present; returns their paths."""
    made = []
    for key, fn, needs in (
        ("e2e", _e2e, ("e2e",)),
        ("scaling", _scaling, ("decode_scaling", "e2e")),
        ("priorities", _priorities, ("priorities",)),
        ("memory", _memory, ("memory",)),
    ):
        if all(isinstance(results.get(n), dict) and "error" not in results[n] for n in needs):
            path = out_dir / f"{stamp}-{key}.png"
            fn(results, path)
            made.append(path)
    return made
