"""The README's main job, end to end: the default config on the embedded digits."""

import csv
import json
import statistics

from imae.cli import main


def test_default_config_clusters_the_digits_about_as_well_as_kmeans_or_better(tmp_path, monkeypatch):
    """k-means on the raw pixels reaches cluster accuracy 0.79 (NMI 0.74) on these digits.

    The default IMAE config varies with the seed (0.75-0.96 over seeds 0-7 on the project's
    2-core machine, mean 0.84), so one seed is a poor guard.  Seeds 0-3 train here as one batched
    ensemble (`imae sweep`); their mean was 0.82 when measured, and a mean below 0.78
    means a term of the objective or the loop is broken.
    """
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--seeds", "0-3", "--no-progress", "--name", "default"]) == 0
    rows = list(csv.DictReader((tmp_path / "runs" / "default" / "summary.csv").open()))
    assert len(rows) == 4
    assert statistics.mean(float(r["cluster_acc"]) for r in rows) >= 0.78
    assert statistics.mean(float(r["nmi"]) for r in rows) >= 0.74
    for row in rows:
        assert float(row["mi_xy"]) > 2.0  # of log 10 = 2.303 nats
        metrics = json.loads((tmp_path / "runs" / "default" / row["run"] / "metrics.json").read_text())
        assert len(metrics["active_dims"]) >= 1
