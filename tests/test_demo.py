"""The demo: its report (small setting), its progress lines and its argument checks."""

import contextlib
import io
import pathlib
import re
import sys

import pytest

from optax_ldl import demo

ROOT = pathlib.Path(__file__).resolve().parent.parent

MEAN_STD = r"(\d+\.\d+) ± (\d+\.\d+)"


@pytest.fixture(scope="module")
def small_run():
  """One run of the small setting (about 20 s of CPU, mostly compiling), shared: (the returned
  numbers, stdout, stderr)."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    result = demo.main(["--small"])
  return result, out.getvalue(), err.getvalue()


def _section(out: str, title: str) -> list[str]:
  """The table lines under the header that starts with ``== title``."""
  lines = out.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("== " + title))
  body = []
  for line in lines[start + 3:]:  # skip the header, column names and rule.
    if not line.strip() or line.startswith("("):
      break
    body.append(line)
  return body


@pytest.mark.slow
def test_report_sections_and_numbers(small_run):
  result, out, _ = small_run
  assert "pretrained on the source task" in out

  lr_rows = {r.split()[0]: r.split()[1:] for r in _section(out, "peak learning rate per layer")}
  assert list(lr_rows) == ["embedding", "0", "1", "head"]
  # decay 1.0: every group at lr; decay 0.75 with 2 layers: 0.75 ** 3, 0.75 ** 2, 0.75, 1.
  lr = 1e-3
  assert [float(v[0]) for v in lr_rows.values()] == pytest.approx([lr] * 4, rel=1e-3)
  assert [float(v[1]) for v in lr_rows.values()] == pytest.approx(
      [lr * 0.75**3, lr * 0.75**2, lr * 0.75, lr], rel=1e-3)

  drift_rows = _section(out, "relative drift from the pretrained weights")
  assert [r.split()[0] for r in drift_rows] == ["embedding", "0", "1", "head"]
  for row in drift_rows:
    assert len(re.findall(MEAN_STD, row)) == 2

  results = _section(out, "results on 256 held-out sequences per task, mean ± std over 2 seeds")
  assert [r.split()[0] for r in results] == ["1", "0.75"]
  for row in results:
    cells = re.findall(MEAN_STD, row)
    assert len(cells) == 3  # target acc, target loss, source retention
    acc, loss, retention = (float(mean) for mean, _ in cells)
    assert 0 <= acc <= 1 and loss > 0 and 0 <= retention <= 1
  assert "per seed" in out and re.search(r"total \d+\.\d s", out)

  # The returned numbers, and what the lr ratios do: the embedding moves less with decay.
  runs = result["runs"]
  assert list(runs) == [1.0, 0.75] and all(len(v) == 2 for v in runs.values())
  for seed in range(2):
    assert runs[0.75][seed]["drift"]["embedding"] < runs[1.0][seed]["drift"]["embedding"]


def _ratio_table(out: str, label: str) -> dict[str, list[float]]:
  """``{group: [ratio at each shown step]}`` under ``-- decay label --``."""
  lines = out.splitlines()
  start = lines.index(f"-- decay {label} --")
  rows = {}
  for line in lines[start + 3:]:
    if not line.strip():
      break
    group, *cells = line.split()
    rows[group] = [float(c) for c in cells]
  return rows


@pytest.mark.slow
def test_unfreeze_mode_compares_layer_schedules_over_the_same_seeds(tmp_path):
  plot = tmp_path / "ratios.png"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    result = demo.main(["--small", "--unfreeze", "--decays", "0.75", "--seeds", "1",
                        "--pretrain-steps", "20", "--eval-samples", "64", "--quiet",
                        "--plot", str(plot)])
  out = out.getvalue()
  # 2 layers, 20 steps: gradual unfreezing every 20 // (2 + 2) = 5 steps (layer 1 at 5,
  # layer 0 at 10, the embeddings at 15); the ramp over 5 steps from step 2, so at step 5
  # its multiplier is (5 - 2 + 1) / 5 = 0.8. Ratios 0.75 ** (distance from the top).
  assert "step 0  step 5  step 10  step 15  step 19" in out
  assert _ratio_table(out, "0.75+unfreeze") == {
      "embedding": [0, 0, 0, 0.4219, 0.4219], "0": [0, 0, 0.5625, 0.5625, 0.5625],
      "1": [0, 0.75, 0.75, 0.75, 0.75], "head": [1, 1, 1, 1, 1]}
  assert _ratio_table(out, "0.75+ramp") == {
      "embedding": [0, 0.3375, 0.4219, 0.4219, 0.4219], "0": [0, 0.45, 0.5625, 0.5625, 0.5625],
      "1": [0, 0.6, 0.75, 0.75, 0.75], "head": [1, 1, 1, 1, 1]}
  assert "-- decay 0.75 --" not in out  # the fixed ratios have no table over the steps.

  results = _section(out, "results on 64 held-out sequences per task, mean ± std over 1 seeds")
  assert [r.split()[0] for r in results] == ["0.75", "0.75+unfreeze", "0.75+ramp"]
  runs = result["runs"]
  assert list(runs) == ["0.75", "0.75+unfreeze", "0.75+ramp"]
  # The embeddings train from step 15 of 20 (unfreeze) and ramp up (ramp): they move less.
  fixed = runs["0.75"][0]["drift"]["embedding"]
  assert runs["0.75+unfreeze"][0]["drift"]["embedding"] < runs["0.75+ramp"][0]["drift"][
      "embedding"] < fixed
  assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_an_argument_error(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # the import fails.
  with pytest.raises(SystemExit) as exit_info:
    demo.parse_args(["--unfreeze", "--plot", "ratios.png"])
  assert exit_info.value.code == 2
  assert "--plot needs matplotlib" in capsys.readouterr().err


def test_plot_steps_are_where_the_ratios_change_slope():
  args = demo.parse_args(["--small", "--unfreeze"])  # 20 steps, 2 layers.
  # Starts every 5 (a switch between k*5 - 1 and k*5); the ramp from 2 to 6; 0 and 19.
  assert demo.plot_steps(args) == [0, 1, 4, 5, 6, 9, 10, 14, 15, 19]


PROGRESS = re.compile(r"^\[ *(\d+\.\d) s\] (.+)$")


@pytest.mark.slow
def test_progress_one_line_a_phase_and_seed_with_elapsed_time(small_run):
  _, out, err = small_run
  assert "[" not in out.split("\n")[0]  # the report (stdout) has no progress lines
  lines = err.splitlines()
  parsed = [PROGRESS.match(line) for line in lines]
  assert all(parsed), lines
  seconds = [float(m.group(1)) for m in parsed]
  messages = [m.group(2) for m in parsed]
  assert seconds == sorted(seconds) and seconds[0] < 1.0
  assert messages[0].startswith("starting:") and messages[-1] == "done"
  assert any(m.startswith("pretraining: step ") for m in messages)
  assert any(m.startswith("pretrained in ") for m in messages)
  for decay in ("1", "0.75"):
    for seed in (1, 2):
      assert any(m.startswith(f"fine-tuned decay {decay}, seed {seed}/2: target accuracy ")
                 for m in messages), messages


class _StopAfterSetUpError(Exception):
  pass


@pytest.mark.parametrize("quiet", [False, True])
def test_quiet_turns_the_progress_off(monkeypatch, capsys, quiet):
  def stop(*args, **kwargs):
    raise _StopAfterSetUpError  # after the set-up: no training needed to see the progress

  monkeypatch.setattr(demo, "pretrain", stop)
  with pytest.raises(_StopAfterSetUpError):
    demo.main(["--small"] + (["--quiet"] if quiet else []))
  err = capsys.readouterr().err
  if quiet:
    assert err == ""
  else:
    assert [PROGRESS.match(line).group(2).split(":")[0] for line in err.splitlines()] == [
        "starting", "pretraining"]


@pytest.mark.parametrize("quiet", [False, True])
def test_minilm_experiment_progress_and_quiet(monkeypatch, capsys, tmp_path, quiet):
  monkeypatch.syspath_prepend(str(ROOT))
  minilm = pytest.importorskip("colab.minilm")
  cache = ROOT / "docs" / "results" / "minilm_runs.jsonl"
  argv = ["--report-only", "--cache", str(cache), "--out", str(tmp_path / "minilm.md")]
  assert minilm.main(argv + (["--quiet"] if quiet else [])) == 0
  captured = capsys.readouterr()
  assert "| data | decay |" in captured.out  # the table, on stdout
  if quiet:
    assert captured.err == ""
  else:
    assert PROGRESS.match(captured.err.splitlines()[0]).group(2).startswith("starting:")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--batch", "0"], "--batch must be >= 1, got 0"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--layers", "-1"], "--layers must be >= 1"),
        (["--pretrain-steps", "0"], "--pretrain-steps must be >= 1"),
        (["--eval-samples", "0"], "--eval-samples must be >= 1"),
        (["--decays", "1.0,1.5"], "--decays must be in (0, 1], got [1.5]"),
        (["--decays", "0"], "--decays must be in (0, 1], got [0.0]"),
        (["--decays", "0.75,nan"], "--decays must be in (0, 1]"),
        (["--decays", "a,b"], "--decays must be comma-separated numbers"),
        (["--decays", "0.75,0.75"], "--decays has a repeated value"),
        (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
        (["--pretrain-lr", "inf"], "--pretrain-lr must be a finite number > 0"),
        (["--weight-decay", "-0.1"], "--weight-decay must be a finite number >= 0"),
        (["--warmup", "1"], "--warmup must be a fraction in [0, 1), got 1.0"),
        (["--width", "30", "--heads", "4"], "--width (30) must be a multiple of --heads (4)"),
        (["--samples", "8", "--batch", "16"], "--batch (16) must be <= --samples (8)"),
        (["--small", "--batch", "64"], "--batch (64) must be <= --samples (32)"),
        (["--steps", "x"], "argument --steps: invalid int value: 'x'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--plot", "ratios.png"], "--plot draws the lr ratios of --unfreeze: add --unfreeze"),
    ],
)
def test_argument_errors(capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    demo.parse_args(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "usage:" in err and message in err, err


def test_help_lists_every_flag_with_its_default(capsys):
  with pytest.raises(SystemExit) as exit_info:
    demo.parse_args(["--help"])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  lines = out.splitlines()
  for flag, default in demo.DEFAULTS.items():
    line = next(x for x in lines if x.strip().startswith(f"--{flag.replace('_', '-')} "))
    assert f"(default: {default})" in line, line
  assert any(x.strip().startswith("--small ") for x in lines)


def test_small_defaults_yield_to_explicit_flags():
  args = demo.parse_args(["--small", "--seeds", "4", "--decays", "0.9"])
  assert args.seeds == 4 and args.decays == [0.9] and args.layers == demo.SMALL["layers"]
  assert demo.parse_args([]).decays == [1.0, 0.75]


def test_weight_decay_filter():
  decayed = ["params/layers_0/mlp_in/kernel", "layers_3/attention/query/kernel"]
  not_decayed = [
      "layers_0/mlp_in/bias", "layers_0/attention_norm/scale", "layers_0/LayerNorm_0/scale",
      "encoder/layer/0/output/LayerNorm/bias", "word_embeddings/embedding",
      "position_embeddings", "Embed_0/embedding", "final_norm/scale",
  ]
  assert all(demo.apply_weight_decay(n) for n in decayed)
  assert not any(demo.apply_weight_decay(n) for n in not_decayed)
