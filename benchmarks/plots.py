"""Plotting shared by the benchmarks' --plot options (needs matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Line", "plot_panels"]

Line = tuple[Sequence[float], Sequence[float], dict[str, Any]]  # x, y, matplotlib style


def plot_panels(
    panels: Mapping[str, Mapping[str, Line]],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    xlabel: str = "model calls (NFE)",
    legend_size: str | None = None,
) -> None:
    """Error against model calls side by side, one panel per entry of `panels` (its title ->
    {label: (calls, errors, style)}), log error axis, ticks at the calls drawn (needs
    matplotlib). The benchmarks' `--plot` figures are drawn by it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(panels), figsize=(6.4 * len(panels), 4.2), squeeze=False, layout="constrained"
    )
    for ax, (panel, lines) in zip(axes[0], panels.items(), strict=True):
        for label, (calls, errors, style) in lines.items():
            ax.plot(calls, errors, label=label, **style)
        ax.set_yscale("log")
        ax.set_xticks(sorted({c for calls, _, _ in lines.values() for c in calls}))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(panel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(**({"fontsize": legend_size} if legend_size else {}))
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
