"""The benchmark's tables (Markdown): req/s side by side with the ratios, then latencies."""

from __future__ import annotations

from typing import Any

Results = dict[tuple[str, int], dict[str, Any]]
LABELS = {"ours": "mlops-runtime", "mlserver": "MLServer", "mlserver-batch": "MLServer+batching",
          "floor": "transport floor", "floor-raw": "floor without ASGI"}  # fmt: skip


def _ms(stats: dict[str, Any]) -> str:
    return f"{stats['p50_us'] / 1000:.2f} / {stats['p99_us'] / 1000:.2f}"


def _errors(stats: dict[str, Any]) -> int:
    return int(stats["errors"] + stats["non2xx"])


def comparison(results: Results, levels: list[int], keys: list[str], unit: str) -> list[str]:
    """Two tables for ``keys`` (``ours`` first): req/s with ours/each ratio (``floor``: ours as
    a percentage of it), then p50/p99 with whether ours's p99 is no worse than each MLServer's."""
    others = [k for k in keys if k != "ours"]
    mlservers = [k for k in others if k.startswith("mlserver")]

    def ratio_head(k: str) -> str:
        return f"ours % of {LABELS[k]}" if k.startswith("floor") else f"ours / {LABELS[k]}"

    def ratio(o: dict[str, Any], s: dict[str, Any], k: str) -> str:
        r = o["rps"] / s["rps"] if s["rps"] else float("inf")
        return f"**{r:.0%}**" if k.startswith("floor") else f"**{r:.2f}x**"

    lines = [
        f"| {unit} | " + " | ".join(f"{LABELS[k]} req/s" for k in keys) + " | "
        + " | ".join(ratio_head(k) for k in others) + " |",
        "|---:|" + "---:|" * (len(keys) + len(others)),
    ]
    for c in levels:
        o = results[("ours", c)]
        lines.append(f"| {c} | " + " | ".join(f"{results[(k, c)]['rps']:.0f}" for k in keys)
                     + " | " + " | ".join(ratio(o, results[(k, c)], k) for k in others) + " |")
    lines += [
        "",
        f"| {unit} | " + " | ".join(f"{LABELS[k]} p50 / p99 (ms)" for k in keys) + " | "
        + " | ".join(f"ours p99 no worse than {LABELS[k]}" for k in mlservers)
        + " | errors (" + " / ".join(LABELS[k] for k in keys) + ") |",
        "|---:|" + "---|" * len(keys) + ":-:|" * len(mlservers) + ":-:|",
    ]
    for c in levels:
        o = results[("ours", c)]
        lines.append(
            f"| {c} | " + " | ".join(_ms(results[(k, c)]) for k in keys) + " | "
            + " | ".join("yes" if o["p99_us"] <= results[(k, c)]["p99_us"] else "NO"
                         for k in mlservers)
            + " | " + " / ".join(str(_errors(results[(k, c)])) for k in keys) + " |")  # fmt: skip
    return [*lines, ""]


def ratio_lines(results: Results, levels: list[int], keys: list[str], what: str,
                unit: str) -> list[str]:
    """One plain line per level: the ratios the targets are about."""
    out = []
    for c in levels:
        o = results[("ours", c)]["rps"]
        parts = []
        for k in keys:
            if k == "ours":
                continue
            other = results[(k, c)]["rps"]
            parts.append(f"ours = {o / other:.0%} of the {LABELS[k]}" if k.startswith("floor")
                         else f"ours/{LABELS[k]} {o / other:.2f}x")
        out.append(f"{what}, {c} {unit if c != 1 else unit.rstrip('s')}: " + ", ".join(parts))
    return out


def big_table(big: Results) -> list[str]:
    lines = [
        "| connections | server, body | req/s | p50 / p99 (ms) | vs mlops-runtime JSON | errors |",
        "|---:|---|---:|---|---:|:-:|",
    ]
    for c in sorted({c for _, c in big}):
        base = big[("ours-json", c)]["rps"]
        for key, label in (("ours-binary", "mlops-runtime, binary"),
                           ("ours-json", "mlops-runtime, JSON"),
                           ("mlserver-json", "MLServer, JSON")):  # fmt: skip
            s = big[(key, c)]
            lines.append(f"| {c} | {label} | {s['rps']:.0f} | {_ms(s)} | {s['rps'] / base:.2f}x "
                         f"| {_errors(s)} |")  # fmt: skip
    return [*lines, ""]
