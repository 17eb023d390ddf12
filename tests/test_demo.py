"""The demo: its report (small setting), its progress lines and its argument checks."""

import contextlib
import io
import pathlib
import re

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
