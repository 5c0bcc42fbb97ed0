"""The report's figures: one colour per loss and one line style per system, the same in every figure, and
PNG bytes with nothing in them that changes between runs (the same runs give the same bytes).
"""

from __future__ import annotations

import io

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> Figure:
    """A figure on a bare Agg canvas (no pyplot state)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG, its metadata cleared so the bytes depend only on the data. Saved with a tight
    bounding box: a legend outside the axes is inside the image, never cut."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight", pad_inches=0.1)
    return buf.getvalue()

LOSS_COLOR = {"l2": "tab:blue", "l1": "tab:orange", "smooth_l1": "tab:green", "wing": "tab:red",
              "hm_mse": "tab:cyan", "hm_l1": "tab:olive", "hm_wing": "tab:pink", "awing": "tab:brown"}

BASELINE_STYLE = ("0.45", "--")

# One line style per system (model, what an ablation turned off, PDB), the same in every figure; colour is the loss.
SYSTEM_STYLE = {("cnn6", "", False): "-", ("cnn6", "", True): (0, (6, 2)), ("cnn7", "", False): "--",
                ("cnn7", "", True): (0, (2, 2)), ("hourglass", "", False): "-.",
                ("hourglass", "no weight map", False): (0, (1, 1)), ("hourglass", "no boundary", False): (0, (3, 1, 1, 1)),
                ("hourglass", "no CoordConv", False): (0, (5, 1, 1, 1, 1, 1))}

THRESHOLDS = (0.08, 0.10)  # the robustness tables' AUC/FR thresholds (the AWing paper's 300-W FR@8%, FR@10%)


def curve_style(loss: str, pdb: bool, variant: str = "", model: str = "cnn6") -> tuple[str, object]:
    """(colour, line style): one colour per loss and one line style per system in every figure."""
    return LOSS_COLOR.get(loss, "tab:purple"), SYSTEM_STYLE.get((model, variant, pdb), (0, (4, 1, 1, 1, 1, 1, 1, 1)))


def ced_figure(title: str, curves: list[tuple[str, pd.DataFrame, tuple[str, object]]]) -> bytes:
    """One CED plot as PNG bytes: (label, threshold/fraction table, (colour, line style)) per curve, the
    AUC/FR thresholds marked, the legend beside the axes (never over the curves, never cut).

    Drawn on a bare Agg canvas (no pyplot state); PNG metadata is cleared so the bytes depend only
    on the data.
    """
    fig = new_figure(8.4, 3.8)
    ax = fig.add_subplot()
    for text, curve, (color, linestyle) in curves:
        ax.plot(100.0 * curve["threshold"].to_numpy(), curve["fraction"].to_numpy(), label=text,
                color=color, linestyle=linestyle, linewidth=1.6)
    for t in THRESHOLDS:
        ax.axvline(100.0 * t, color="0.3", linewidth=0.8, linestyle=":")
        ax.text(100.0 * t, 1.01, f"{100 * t:g}%", ha="center", va="bottom", fontsize=7, color="0.3",
                transform=ax.get_xaxis_transform())
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("fraction of test faces")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlim(left=0.0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=10, pad=12)
    if curves:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    return png_bytes(fig)
