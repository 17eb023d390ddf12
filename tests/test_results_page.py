"""The results page (``python -m colab.results``): its summary by hand, a small run end to end."""

import json
import math
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def results(monkeypatch):
  monkeypatch.syspath_prepend(str(ROOT))
  pytest.importorskip("flax")
  return pytest.importorskip("colab.results")


def _record(setting, seed, val_acc, test_acc, test_loss):
  return dict(setting=setting, seed=seed, n_train=128, steps=24, batch=16, n_val=256,
              n_test=512, pool=5526, decay=[1.0, 1.0, 0.7, 0.7], lr=[1e-4, 1e-3, 1e-4, 1e-3],
              val_acc=val_acc, val_loss=[0.5] * 4, test_acc=test_acc, test_loss=test_loss,
              seconds=60.0)


# 3 seeds; by hand: on validation decay 1.0 is best at lr 1e-3 (on test it would be 1e-4: the
# choice must not look at the test set), decay 0.7 at 1e-4.
RECORDS = [
    _record("few-sample", 0, [.80, .85, .90, .70], [.90, .84, .86, .70], [.5, .4, .3, .9]),
    _record("few-sample", 1, [.80, .83, .88, .70], [.90, .82, .85, .70], [.5, .4, .4, .9]),
    _record("few-sample", 2, [.80, .84, .86, .70], [.90, .86, .84, .70], [.5, .4, .5, .9]),
]


def test_the_learning_rate_is_chosen_on_validation_and_differences_are_paired(results):
  points = results.per_point(RECORDS)
  lrs = results.tuned(points)
  assert lrs == {("few-sample", 1.0): 1e-3, ("few-sample", 0.7): 1e-4}
  mean, half, n = results.paired(points, lrs, "few-sample", 0.7, "test_acc")
  diffs = np.array([0.86 - 0.84, 0.85 - 0.82, 0.84 - 0.86])  # per seed, by hand
  assert n == 3
  assert mean == pytest.approx(diffs.mean())
  assert half == pytest.approx(4.303 * diffs.std(ddof=1) / math.sqrt(3))  # t(0.975, 2 dof)
  rows = {(r["decay"], r["lr"]): r for r in results.table_rows(RECORDS)}
  assert rows[(1.0, 1e-3)]["chosen"] and not rows[(1.0, 1e-4)]["chosen"]
  assert rows[(0.7, 1e-4)]["test_acc_mean"] == pytest.approx((0.86 + 0.85 + 0.84) / 3)
  assert rows[(0.7, 1e-4)]["test_acc_std"] == pytest.approx(0.01)


def test_the_page_states_what_was_measured_and_no_verdict_beyond_the_interval(results):
  text = results.markdown(RECORDS, results.FULL[:1], "python -m colab.results --out x",
                          minutes=3.0, expected=3)
  assert "`python -m colab.results --out x`" in text
  assert "Test set: 512 words" in text and "validation set: 256 words" in text
  assert "few-sample: 128 training words, 24 steps of batch 16" in text
  assert "| few-sample | 0.7 | 0.0001 | 0.8500 ± 0.0100 | +0.0100 ± " in text
  # The interval (0.01 ± 0.065) contains 0: the page says so, in those words.
  assert "no accuracy difference distinguishable from 0" in text
  assert "**0.001**" in text  # the tuned lr of the baseline is marked in the grid table
  assert "Incomplete" not in text
  # Both choices are at an edge of the two-point grid: the page says a better lr may lie beyond.
  assert ("Chosen at an edge of the learning-rate grid, so a better learning rate may lie beyond "
          "it: few-sample decay 1.0 (lr 0.001), few-sample decay 0.7 (lr 0.0001).") in text
  assert "Incomplete: 3 of 5" in results.markdown(RECORDS, results.FULL[:1], "c", 3.0, 5)


@pytest.mark.slow  # trains MiniLM (two compiles of the vmapped step): about a minute.
def test_the_page_table_and_plot_come_from_one_command(results, tmp_path):
  argv = ["--small", "--seeds", "2", "--decays", "1.0", "0.5", "--lrs", "1e-3",
          "--out", str(tmp_path), "--quiet"]
  assert results.main(argv) == 0
  page = (tmp_path / "minilm.md").read_text(encoding="utf-8")
  records = [json.loads(line) for line in (tmp_path / "minilm_sweep.jsonl").read_text()
             .splitlines()]
  assert sorted((r["setting"], r["seed"]) for r in records) == [
      ("few-sample", 0), ("few-sample", 1), ("full", 0), ("full", 1)]
  for r in records:
    assert r["decay"] == [1.0, 0.5] and r["lr"] == [1e-3, 1e-3]
    assert all(0 <= a <= 1 for a in r["test_acc"] + r["val_acc"])
    assert all(np.isfinite(r["test_loss"]))
    assert r["test_acc"][0] != r["test_acc"][1] or r["test_loss"][0] != r["test_loss"][1]
  assert "python -m colab.results --small --seeds 2 --decays 1.0 0.5 --lrs 0.001" in page
  assert "| few-sample | 0.5 | 0.001 |" in page and "| full | 1.0 | 0.001 |" in page
  assert (tmp_path / "minilm.png").read_bytes()[:4] == b"\x89PNG"
  csv = (tmp_path / "minilm_table.csv").read_text().splitlines()
  assert csv[0].startswith("setting,decay,lr,seeds,chosen,") and len(csv) == 1 + 4
  # A rerun reads the finished sweeps back: nothing is trained again, the page is the same.
  assert results.main(argv) == 0
  assert (tmp_path / "minilm.md").read_text(encoding="utf-8") == page
  # An extended grid trains only the new points: one sweep more per (setting, seed).
  wider = [*argv[:argv.index("--lrs") + 2], "3e-3", *argv[argv.index("--lrs") + 2:]]
  assert results.main(wider) == 0
  lines = (tmp_path / "minilm_sweep.jsonl").read_text().splitlines()
  added = [json.loads(line) for line in lines[len(records):]]
  assert len(added) == 4 and all(r["lr"] == [3e-3, 3e-3] for r in added)
  page = (tmp_path / "minilm.md").read_text(encoding="utf-8")
  assert "| few-sample | 0.5 | 0.001 |" in page and "| full | 1.0 | 0.003 |" in page


def test_the_range_of_good_learning_rates_is_read_from_validation(results):
  points = results.per_point(RECORDS)
  # By hand, mean validation accuracy: decay 1.0: lr 1e-4 0.80, 1e-3 0.84; decay 0.7: 1e-4
  # 0.88, 1e-3 0.70.
  assert results.near_best(points, "few-sample", 1.0) == [1e-3]
  assert results.near_best(points, "few-sample", 1.0, within=0.05) == [1e-4, 1e-3]
  assert results.near_best(points, "few-sample", 0.7, within=0.05) == [1e-4]
  text = results.markdown(RECORDS, results.FULL[:1], "c", 3.0, 3)
  assert ("- **few-sample**, the learning rates whose mean validation accuracy is within 0.02 "
          "of the decay's best (how wide a range tuning may land in): decay 1.0: 0.001; "
          "decay 0.7: 0.0001.") in text


def test_a_grid_is_gathered_from_the_sweeps_that_trained_its_points(results):
  first = RECORDS[0]
  extra = dict(first, decay=[1.0, 0.7], lr=[3e-3, 3e-3], val_acc=[.1, .2], val_loss=[.6, .7],
               test_acc=[.3, .4], test_loss=[.8, .9], seconds=5.0)
  other_seed = dict(extra, seed=1)
  points = [(1.0, 1e-3), (1.0, 3e-3), (0.7, 3e-3), (0.7, 1e-4)]
  found = [first, other_seed, extra]
  assert results.missing_points([first], ("few-sample", 0), points) == [(1.0, 3e-3),
                                                                         (0.7, 3e-3)]
  assert results.missing_points(found, ("few-sample", 0), points) == []
  assert results.merge([first, other_seed], ("few-sample", 0), points) is None
  merged = results.merge(found, ("few-sample", 0), points)
  # By hand, in the order of points: first[1], extra[0], extra[1], first[2].
  assert merged["decay"] == [1.0, 1.0, 0.7, 0.7] and merged["lr"] == [1e-3, 3e-3, 3e-3, 1e-4]
  assert merged["val_acc"] == [.85, .1, .2, .90]
  assert merged["test_loss"] == [.4, .8, .9, .3]
  assert merged["seconds"] == 65.0 and merged["seed"] == 0
