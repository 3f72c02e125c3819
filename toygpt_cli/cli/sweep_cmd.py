"""`toygpt sweep`: run a grid or random search over training options, and its table.

toygpt sweep run widths --set n_embd=96,128 --set muon_lr=0.01,0.02 --max-time 30s
toygpt sweep show widths            # trials by whole-val loss; results.csv, curves.png
toygpt sweep run widths --emit slurm   # a SLURM array job instead of running here
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from toygpt_cli.cli.common import command_line, err, fancy_output, out, paths, print_json
from toygpt_cli.cli.options import uses
from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.errors import UsageError

app = typer.Typer(
    help="Grid or random searches over training options, each trial an ordinary run.",
    no_args_is_help=True,
)
FIELDS = {f for cls in (ModelConfig, TrainConfig) for f in cls.__dataclass_fields__}


@app.command("run")
@uses("sweep_name", "sets", "random", "jobs", "emit", "preset", "config", "data", "max_time",
      "iters", "threads", "quiet", "runs_dir", "data_dir", max_time=None, iters=None,
      threads=None)  # fmt: skip
def run(o) -> None:
    """Run a sweep's trials one after another (or --jobs at a time), continuing it if it
    exists: finished trials are kept, a half-done one resumes."""
    from toygpt_cli.recipes import sweep

    where = paths(o.data_dir, o.runs_dir)
    plan = _plan(o, where)
    if o.emit == "slurm":
        script = plan.folder / "slurm.sh"
        from toygpt_cli.storage.files import write_atomic

        text = sweep.slurm_script(plan, where.runs_dir, sys.executable, Path.cwd())
        write_atomic(script, lambda f: f.write(text.encode()))
        err.print(f"wrote {script}: submit it with `sbatch {script}`", highlight=False)
        out.print(str(script), markup=False, highlight=False)
        return
    todo = [t.index for t in plan.trials if plan.result(t.index) is None]
    err.print(
        f"sweep {plan.name}: {len(plan.trials)} trials, {len(plan.trials) - len(todo)} done, "
        f"{len(todo)} to run",
        highlight=False,
    )
    if o.jobs > 1:
        _parallel(plan, todo, o.jobs, where, o.threads)
    else:
        for index in todo:
            _one_trial(plan, index, where, o.quiet)
    _report(plan, where.runs_dir, as_json=False)


def _plan(o, where):
    from toygpt_cli.config import build_configs
    from toygpt_cli.recipes import sweep
    from toygpt_cli.recipes.presets import load_config_file, preset_options

    saved = (where.runs_dir / sweep.SWEEPS / o.sweep_name / "sweep.json").exists()
    asked = o.sets or o.preset or o.config or o.data or o.max_time is not None or o.iters
    if saved and not asked:  # `toygpt sweep run NAME` continues a sweep as planned
        return sweep.Plan.load(o.sweep_name, where.runs_dir)
    base: dict = {}
    if o.preset:
        base.update(preset_options(o.preset))
    file = load_config_file(Path(o.config)) if o.config else {}
    base.update(file)
    data = o.data or base.pop("data", None)
    for key in ("max_time", "iters", "threads"):
        value = getattr(o, key)
        if value is not None and (key != "threads" or value):
            base[key] = value
    _, shared = build_configs(base)  # the shared options must be valid on their own
    if shared.compile and "compile" not in file:
        from toygpt_cli.recipes.sizing import compile_pays

        base["compile"] = compile_pays(shared)  # a preset's, where trials earn it back
    if data is None:
        from toygpt_cli.cli.train_cmd import _default_dataset

        data = _default_dataset(where.data_dir)
    axes = sweep.parse_axes(o.sets or [])
    return sweep.Plan.create(o.sweep_name, base, axes, str(Path(data).resolve()),
                             where.runs_dir, random_trials=o.random or 0)  # fmt: skip


def _one_trial(plan, index: int, where, quiet: bool) -> None:
    from toygpt_cli.cli.progress import TrainDisplay
    from toygpt_cli.recipes import sweep
    from toygpt_cli.stopping import StopSwitch

    best = next((r for r in sweep.table(plan, where.runs_dir) if r["val_loss"] is not None),
                None)  # fmt: skip
    values = ", ".join(f"{k}={v}" for k, v in plan.trials[index].params.items())
    so_far = f"; best so far {best['val_loss']:.4f} (trial {best['trial']})" if best else ""
    err.print(f"trial {index} ({index + 1} of {len(plan.trials)}): {values}{so_far}",
              highlight=False)  # fmt: skip
    display = TrainDisplay(fancy_output(quiet))
    stop = StopSwitch(on_first=display.stopping)
    with display, stop.on_signals():
        result = sweep.run_trial(plan, index, where.runs_dir, callback=display, stop=stop,
                                 command=command_line())  # fmt: skip
        if result is None and stop.signal is not None:
            stop.done()  # a second Ctrl-C during the exit is ignored
    if result is None:
        if stop.signal is not None:
            err.print(f"sweep {plan.name} stopped; run it again to continue", highlight=False)
            raise typer.Exit(128 + stop.signal)
        err.print(f"trial {index} is being trained by another process; skipped")
        return
    _said(result)


def _said(result: dict) -> None:
    if result["status"] == "completed":
        err.print(f"trial {result['trial']}: val {result['val_loss']:.4f} ({result['run']})",
                  highlight=False)  # fmt: skip
    else:
        err.print(Text(f"trial {result['trial']} failed: {result['message']}", style="yellow"))


def _parallel(plan, todo: list[int], jobs: int, where, threads: int | None) -> None:
    """Trials in `jobs` processes at once, the CPU threads split between them."""
    from toygpt_cli.device import usable_cpus

    per = threads or max(1, usable_cpus() // jobs)
    waiting, running = list(todo), []
    env = dict(os.environ, OMP_NUM_THREADS=str(per))
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                index = waiting.pop(0)
                cmd = [sys.executable, "-m", "toygpt_cli", "sweep", "trial", plan.name,
                       str(index), "--runs-dir", str(where.runs_dir), "--threads", str(per),
                       "--quiet"]  # fmt: skip
                err.print(f"trial {index} ({index + 1} of {len(plan.trials)}) started",
                          highlight=False)  # fmt: skip
                running.append((index, subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                                        stderr=subprocess.DEVNULL)))  # fmt: skip
            for index, proc in list(running):
                if proc.poll() is not None:
                    running.remove((index, proc))
                    result = plan.result(index)
                    if result is not None:
                        _said(result)
            import time

            time.sleep(0.2)
    except KeyboardInterrupt:
        for _, proc in running:
            proc.send_signal(2)
        for _, proc in running:
            proc.wait()
        raise


@app.command("trial", hidden=False)
@uses("sweep_name", "trial", "threads", "quiet", "runs_dir", threads=None)
def trial(o) -> None:
    """Run one trial of a sweep (what `--jobs` and a SLURM array task run)."""
    from toygpt_cli.device import set_threads
    from toygpt_cli.recipes import sweep

    where = paths(runs_dir=o.runs_dir)
    plan = sweep.Plan.load(o.sweep_name, where.runs_dir)
    if not 0 <= o.trial < len(plan.trials):
        raise UsageError(f"sweep {plan.name} has trials 0 to {len(plan.trials) - 1}")
    if o.threads:
        set_threads(o.threads)
    _one_trial(plan, o.trial, where, o.quiet)


@app.command("show")
@uses("sweep_name", "json", "runs_dir")
def show(o) -> None:
    """A sweep's trials by whole-val loss (also written to results.csv, and curves.png)."""
    from toygpt_cli.recipes import sweep

    where = paths(runs_dir=o.runs_dir)
    _report(sweep.Plan.load(o.sweep_name, where.runs_dir), where.runs_dir, o.json)


def _report(plan, runs_dir: Path, as_json: bool) -> None:
    from toygpt_cli.recipes import sweep

    rows = sweep.table(plan, runs_dir)
    csv_path = sweep.write_results(plan, rows)
    png = sweep.write_curves(plan, runs_dir)
    if as_json:
        print_json(rows)
        return
    names = [a["name"] for a in plan.axes]
    table = Table(title=Text(f"sweep {plan.name}: {len(rows)} trials, by whole-val loss"))
    for col in ("trial", *names, "val loss", "status", "steps", "run"):
        table.add_column(col, justify="right" if col in ("trial", "val loss", "steps") else "left")
    for r in rows:
        loss = "-" if r["val_loss"] is None else f"{r['val_loss']:.4f}"
        status = r["status"] if r["status"] != "failed" else f"failed: {r['message']}"
        table.add_row(str(r["trial"]), *(str(r["params"].get(n)) for n in names), loss,
                      Text(status), str(r["steps"] or "-"), Text(r["run"] or "-"))  # fmt: skip
    out.print(table)
    err.print(f"wrote {csv_path}" + (f" and {png}" if png else ""), highlight=False)
