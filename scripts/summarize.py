#!/usr/bin/env python3
"""Prints a table of evaluate's JSON files: dataset, model, best epoch and validation top-1 (the
selection split) and test top-1/top-5/NLL/ECE. Usage: summarize.py runs/demo/eval/*.json"""
import json
import sys

rows = []
for path in sys.argv[1:]:
    with open(path) as f:
        j = json.load(f)
    m, t = j["metrics"], j.get("training", {})
    rows.append((j["dataset"], j["kind"], j["arch"], t.get("best_epoch", "-"),
                 t.get("best_val_metric", float("nan")), m["top1"], m["top5"], m["nll"], m["ece"], j["split"], path))
print(f"{'dataset':<15} {'model':<10} {'arch':<10} {'best ep':>7} {'val top1':>9} {'test top1':>9} "
      f"{'top5':>7} {'NLL':>7} {'ECE':>7}")
for r in rows:
    print(f"{r[0]:<15} {r[1]:<10} {r[2]:<10} {r[3]:>7} {100 * r[4]:>8.2f}% {100 * r[5]:>8.2f}% "
          f"{100 * r[6]:>6.2f}% {r[7]:>7.4f} {r[8]:>7.4f}")
