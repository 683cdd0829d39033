"""Summarise the label-bank screen: final validation (and test) error, and each refresh's bank diagnostics.
    python results/bank-screen/summary.py results/bank-screen > results/bank-screen/summary.md"""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1])
print("| run | val error % | test error % | train s | refreshes: kept / acc of kept / fixed / broken (%) |")
print("|---|---|---|---|---|")
for d in sorted(p for p in root.iterdir() if (p / "results.json").exists()):
    r = json.loads((d / "results.json").read_text())
    rec = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    bank = " ; ".join(f"{100 * x['bank_kept']:.1f} / {100 * x['bank_acc_kept']:.1f} / {100 * x['bank_fixed']:.2f} / "
                      f"{100 * x['bank_broken']:.2f}" for x in rec if x["kind"] == "refresh")
    print(f"| {d.name} | {r['val_error']:.2f} | {r['test_error']:.2f} | {r['train_seconds']:.0f} | {bank} |")
