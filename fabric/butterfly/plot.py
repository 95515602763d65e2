"""Drawing the butterfly run: messages delivered per intermediary over time, events marked.

Needs matplotlib (``pip install 'zmq-fabric[plot]'``; ``scripts/butterfly`` installs it).
"""
from __future__ import annotations

from typing import Any

BIN_S = 0.1


def draw(outcome: Any, path: str) -> None:
    """Write the plot of ``outcome`` (a :class:`fabric.butterfly.scenario.Outcome`) to
    ``path`` (PNG). Raises ImportError when matplotlib is missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nameservice.security.context import KEY_MARK

    fig, ax = plt.subplots(figsize=(11, 5))
    for endpoint, counts in sorted(outcome.timeline.items()):
        name = outcome.intermediaries.get(endpoint, endpoint)
        plain = endpoint.partition(KEY_MARK)[0]  # the server's key (--secure) is no label
        xs = [i * BIN_S for i in range(len(counts))]
        ax.plot(xs, [c / BIN_S for c in counts], label=f"{name} ({plain})", linewidth=1.2)
    top = ax.get_ylim()[1]
    for at, text in outcome.events:
        if not text.startswith("("):
            continue
        x = at - outcome.start
        ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
        ax.text(x, top * 0.98, " " + text.split(")")[0] + ")", rotation=90, va="top",
                fontsize=8, color="dimgrey")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("messages delivered per second")
    ax.set_title("fabric butterfly: delivery per intermediary "
                 "(a: kill, b: moved, c: drain, d: leader killed)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
