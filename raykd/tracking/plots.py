"""Plots logged with a run: training curves and teacher-vs-student score scatter."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_curve(history: dict[str, list[tuple[int, float]]], path: str | Path,
               title: str = "training loss") -> Path:
    """One line per stage: (step, loss) pairs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in history.items():
        if points:
            steps, values = zip(*points, strict=False)
            ax.plot(steps, values, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if history:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def score_scatter(teacher: np.ndarray, student: np.ndarray, labels: np.ndarray,
                  path: str | Path, title: str = "teacher vs student scores") -> Path:
    """Teacher against student scores on a dev sample; labelled positives highlighted."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    labels = np.asarray(labels).astype(bool)
    ax.scatter(teacher[~labels], student[~labels], s=6, alpha=0.4, label="candidates")
    ax.scatter(teacher[labels], student[labels], s=12, alpha=0.8, label="labelled positives")
    if len(teacher) > 1:
        rho = np.corrcoef(teacher, student)[0, 1]
        title = f"{title} (pearson {rho:.2f})"
    ax.set_xlabel("teacher score")
    ax.set_ylabel("student score")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
