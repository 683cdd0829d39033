"""Paired table of the label-bank confirmation: make run's preset (metaselftrain), its twin without the meta part
(selftrain) and supervised for the same minutes, per seed (= split seed), with the bank diagnostics summed over
the refreshes. Supervised at 1000 labels is the committed make-run rows (4660 iterations: make run's training
seconds at the supervised step's cost).
    python results/bank-confirm/summary.py results/bank-confirm > results/bank-confirm/summary.md"""
import json
import statistics
import sys
from pathlib import Path

root = Path(sys.argv[1])
SUP_1000 = {0: "results/make-run-supervised", 1: "results/make-run-pairs/supervised-s1",
            2: "results/make-run-pairs/supervised-s2"}


def result(d: Path) -> dict | None:
    return json.loads((d / "results.json").read_text()) if (d / "results.json").exists() else None


def bank(d: Path) -> tuple[float, float]:
    """(fixed, broken): % of pool images the correction moved to / away from the true class, summed over refreshes."""
    rec = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    ref = [r for r in rec if r["kind"] == "refresh"]
    return 100 * sum(r["bank_fixed"] for r in ref), 100 * sum(r["bank_broken"] for r in ref)


for labels in (1000, 100):
    print(f"\n### {labels} labels\n")
    print("| seed | metaselftrain | selftrain (twin) | supervised, same minutes | meta - twin | meta - supervised "
          "| fixed / broken % (meta) | train s (meta / twin / sup) |")
    print("|---|---|---|---|---|---|---|---|")
    cols = {"meta": [], "twin": [], "sup": []}
    for s in (0, 1, 2):
        m, t = result(root / f"default-{labels}-s{s}"), result(root / f"twin-{labels}-s{s}")
        sup = result(Path(SUP_1000[s]) if labels == 1000 else root / f"supervised-{labels}-s{s}")
        if m is None:
            continue
        f, b = bank(root / f"default-{labels}-s{s}")
        e = {k: (v["test_error"] if v else None) for k, v in (("meta", m), ("twin", t), ("sup", sup))}
        for k, v in e.items():
            if v is not None:
                cols[k].append(v)
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        d_t = None if e["twin"] is None else e["meta"] - e["twin"]
        d_s = None if e["sup"] is None else e["meta"] - e["sup"]
        secs = " / ".join(fmt(x["train_seconds"]) if x else "-" for x in (m, t, sup))
        print(f"| {s} | {fmt(e['meta'])} | {fmt(e['twin'])} | {fmt(e['sup'])} | {fmt(d_t)} | {fmt(d_s)} "
              f"| {f:.2f} / {b:.2f} | {secs} |")
    ms = lambda v: f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else "-"  # noqa: E731
    print(f"| mean ± std | {ms(cols['meta'])} | {ms(cols['twin'])} | {ms(cols['sup'])} | | | | |")
