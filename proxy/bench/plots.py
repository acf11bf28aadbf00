"""PNG plots of the result rows (matplotlib, Agg backend; imported only when plotting)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from proxy.bench import BenchError
from proxy.bench.report import Row

MISSING = "PNG plots need matplotlib: pip install 'dagcache[bench]' (or run with --no-plots)"


def check_matplotlib() -> None:
    """Raise :class:`BenchError` with the one-line fix when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BenchError(MISSING) from None


def _by_target(rows: Sequence[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for row in rows:
        out.setdefault(row.target, []).append(row)
    return {t: sorted(rs, key=lambda r: r.users) for t, rs in out.items()}


def plot(rows: Sequence[Row], out: Path, title: str) -> list[Path]:
    """``latency.png`` (p50/p95/p99 against users, one colour per target) and, when DB figures exist,
    ``db_statements.png`` (statements/s against users). Returns the files written."""
    check_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    targets = _by_target(rows)
    fig, ax = plt.subplots(figsize=(8, 5))
    for colour, (target, rs) in zip(("C0", "C1", "C2", "C3", "C4"), targets.items(), strict=False):
        users = [r.users for r in rs]
        for field, style in (("p50_ms", ":"), ("p95_ms", "--"), ("p99_ms", "-")):
            values = [getattr(r, field) for r in rs]
            if all(v is not None for v in values):
                ax.plot(users, values, style, marker="o", color=colour, label=f"{target} {field[:3]}")
    ax.set_xlabel("simulated users")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"{title}: latency percentiles")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    path = out / "latency.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(path)

    if any(r.db_per_s is not None for r in rows):
        fig, ax = plt.subplots(figsize=(8, 5))
        for colour, (target, rs) in zip(("C0", "C1", "C2", "C3", "C4"), targets.items(), strict=False):
            points = [(r.users, r.db_per_s) for r in rs if r.db_per_s is not None]
            if points:
                ax.plot([u for u, _ in points], [v for _, v in points], "-", marker="o", color=colour, label=target)
        ax.set_xlabel("simulated users")
        ax.set_ylabel("metadata DB statements / s")
        ax.set_yscale("symlog")
        ax.set_title(f"{title}: DB statements per second")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        path = out / "db_statements.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
