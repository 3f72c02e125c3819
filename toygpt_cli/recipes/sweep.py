"""Sweeps: a grid or a random search over training options, each trial an ordinary run.

    plan = Plan.create("widths", base={...}, axes=parse_axes(["n_embd=96,128"]), ...)
    for trial in plan.trials: run_trial(plan, trial.index, runs_dir, ...)

A sweep lives in `runs/sweeps/NAME/`: `sweep.json` (the plan: the options every trial
shares, the axes, each trial's values, the data), `trials/K/result.json` (each finished
trial: its run, status, whole-val loss or the one-line reason it failed), `results.csv`
and `curves.png`. Each trial is a run in `runs/`, labelled `NAME/K`, recording its sweep
in config.json, so `runs`, `sample`, `eval` and `--resume` treat it as any run.

Running a sweep again continues it: a trial with a result is never repeated, a trial
whose run exists but did not finish is resumed, the others start. Each trial is locked
while it trains (its folder in trials/), so several processes (`--jobs`, SLURM array
tasks) can work through one sweep.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toygpt_cli.config import build_configs, declared
from toygpt_cli.declare import check
from toygpt_cli.errors import ToygptError, UsageError
from toygpt_cli.storage.files import read_json, write_atomic, write_json

SWEEPS = "sweeps"  # the sweeps' folder, inside the runs folder
FORMAT = "toygpt-sweep/1"


@dataclass
class Axis:
    """One option a sweep varies: listed values, or a range drawn from (random search)."""

    name: str
    values: list[Any] = field(default_factory=list)
    low: float | None = None
    high: float | None = None
    log: bool = False

    def draw(self, rng: random.Random) -> Any:
        if self.values:
            return rng.choice(self.values)
        kind = declared(self.name).type
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return round(value) if kind == "int" else float(f"{value:.4g}")


def parse_axes(specs: list[str]) -> list[Axis]:
    """`--set name=v1,v2,...` (values) or `--set name=low..high[:log]` (a range)."""
    axes = []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not rest:
            raise UsageError(f"--set takes name=v1,v2 or name=low..high, got {spec!r}")
        try:
            f = declared(name)
        except UsageError:
            raise UsageError(
                f"--set {name}: not a training option (see toygpt train --help)"
            ) from None
        if f.metadata["opt"].resume == "steps":
            raise UsageError("--set iters: give each trial's length with --iters or --max-time")
        log = rest.endswith(":log")
        rest = rest.removesuffix(":log")
        if ".." in rest:
            low, high = (float(check(f, _parse(x.strip()))) for x in rest.split("..", 1))
            if not low < high or (log and low <= 0):
                raise UsageError(f"--set {name}: a range needs low < high (and low > 0 for :log)")
            axes.append(Axis(name, low=low, high=high, log=log))
        else:
            values = [check(f, _parse(v.strip())) for v in rest.split(",") if v.strip()]
            axes.append(Axis(name, values=values))
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise UsageError("each option may be --set once")
    return axes


def _parse(text: str) -> Any:
    """A value as typed: a number, true/false, or the text itself."""
    lowered = text.lower()
    if lowered in ("true", "false", "on", "off"):
        return lowered in ("true", "on")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


@dataclass
class Trial:
    index: int
    params: dict[str, Any]


@dataclass
class Plan:
    name: str
    base: dict[str, Any]  # options every trial shares (preset, config file, command line)
    axes: list[dict[str, Any]]
    trials: list[Trial]
    data: str | None
    folder: Path

    @classmethod
    def create(cls, name: str, base: dict[str, Any], axes: list[Axis], data: str | None,
               runs_dir: Path, random_trials: int = 0, seed: int = 0) -> Plan:  # fmt: skip
        """The plan of a new sweep, or the saved plan when the same sweep runs again."""
        _check_name(name)
        if not axes:
            raise UsageError("give at least one --set name=values")
        if any(a.low is not None for a in axes) and not random_trials:
            raise UsageError("a range (low..high) needs --random N: how many trials to draw")
        if random_trials:
            rng = random.Random(seed)
            params = [{a.name: a.draw(rng) for a in axes} for _ in range(random_trials)]
        else:
            params = [dict(zip([a.name for a in axes], combo, strict=True))
                      for combo in itertools.product(*(a.values for a in axes))]  # fmt: skip
        if len(params) > 10_000:
            raise UsageError(f"a sweep of {len(params):,} trials is too many (at most 10,000)")
        plan = cls(name, base, [asdict(a) for a in axes],
                   [Trial(i, p) for i, p in enumerate(params)], data,
                   Path(runs_dir) / SWEEPS / name)  # fmt: skip
        saved = plan.folder / "sweep.json"
        if saved.exists():
            old = cls.load(name, runs_dir)
            if (old.base, old.axes, [t.params for t in old.trials], old.data) != (
                plan.base, plan.axes, [t.params for t in plan.trials], plan.data,
            ):  # fmt: skip
                raise UsageError(
                    f"sweep {name} exists with another plan ({saved}); continue it with "
                    f"`toygpt sweep run {name}` alone, or choose another name"
                )
            return old
        try:
            plan.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ToygptError(f"cannot create {plan.folder}: {exc.strerror or exc}") from None
        write_json(saved, plan.to_dict())
        return plan

    @classmethod
    def load(cls, name: str, runs_dir: Path) -> Plan:
        _check_name(name)
        folder = Path(runs_dir) / SWEEPS / name
        try:
            raw = read_json(folder / "sweep.json")
            trials = [Trial(int(t["trial"]), dict(t["params"])) for t in raw["trials"]]
            if raw.get("format") != FORMAT:
                raise ValueError("not a toygpt sweep")
            return cls(raw["name"], dict(raw["base"]), list(raw["axes"]), trials,
                       raw.get("data"), folder)  # fmt: skip
        except FileNotFoundError:
            raise ToygptError(f"no sweep {name!r} in {Path(runs_dir) / SWEEPS}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ToygptError(f"sweep {name} is damaged ({folder / 'sweep.json'}: {exc})") from None

    def to_dict(self) -> dict[str, Any]:
        trials = [{"trial": t.index, "params": t.params} for t in self.trials]
        return {"format": FORMAT, "name": self.name, "base": self.base, "axes": self.axes,
                "data": self.data, "trials": trials}  # fmt: skip

    def options(self, trial: Trial) -> dict[str, Any]:
        return {**self.base, **trial.params}

    def result_path(self, index: int) -> Path:
        return self.folder / "trials" / str(index) / "result.json"

    def result(self, index: int) -> dict[str, Any] | None:
        try:
            return read_json(self.result_path(index))
        except (OSError, ValueError):
            return None

    def label(self, index: int) -> str:
        return f"{self.name}/{index}"


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or name.startswith("."):
        raise UsageError(f"a sweep's name is a plain folder name, got {name!r}")


def trial_runs(plan: Plan, runs_dir: Path) -> dict[int, Path]:
    """The run folder of each trial that has one (the newest, if a trial has several)."""
    from toygpt_cli.runs.folder import Run, list_run_dirs

    found: dict[int, Path] = {}
    for path in reversed(list_run_dirs(runs_dir)):  # oldest first: the newest wins
        try:
            sweep = Run(path).config().get("sweep") or {}
        except ToygptError:
            continue
        if isinstance(sweep, dict) and sweep.get("name") == plan.name:
            index = sweep.get("trial")
            if isinstance(index, int):
                found[index] = path
    return found


def finish(plan: Plan, index: int, status: str, run: Path | None, message: str | None,
           val_loss: float | None = None, steps: int | None = None,
           wall: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Record a trial's end (a result is final: it is never run again)."""
    result = {"trial": index, "params": plan.trials[index].params, "status": status,
              "run": run.name if run else None, "val_loss": val_loss, "steps": steps,
              "wall_seconds": wall, "message": message}  # fmt: skip
    path = plan.result_path(index)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return result


def table(plan: Plan, runs_dir: Path) -> list[dict[str, Any]]:
    """One row per trial, finished ones first by whole-val loss, then the rest by index."""
    runs = trial_runs(plan, runs_dir)
    rows = []
    for trial in plan.trials:
        result = plan.result(trial.index)
        if result is None:
            run = runs.get(trial.index)
            result = {"trial": trial.index, "params": trial.params,
                      "status": "started" if run else "pending",
                      "run": run.name if run else None, "val_loss": None, "steps": None,
                      "wall_seconds": None, "message": None}  # fmt: skip
        rows.append(result)
    done = sorted((r for r in rows if r["val_loss"] is not None), key=lambda r: r["val_loss"])
    return done + [r for r in rows if r["val_loss"] is None]


def write_results(plan: Plan, rows: list[dict[str, Any]]) -> Path:
    """results.csv in the sweep folder: one line per trial, as `sweep show` lists them."""
    names = [a["name"] for a in plan.axes]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", *names, "status", "val_loss", "steps", "wall_seconds", "run",
                     "message"])  # fmt: skip
    for r in rows:
        writer.writerow([r["trial"], *(r["params"].get(n) for n in names), r["status"],
                         r["val_loss"], r["steps"], r["wall_seconds"], r["run"],
                         r["message"]])  # fmt: skip
    path = plan.folder / "results.csv"
    write_atomic(path, lambda f: f.write(buffer.getvalue().encode()))
    return path


def write_curves(plan: Plan, runs_dir: Path) -> Path | None:
    """curves.png: every trial's validation curve on one chart (needs matplotlib)."""
    from toygpt_cli.runs.folder import Run
    from toygpt_cli.runs.plot import plotting_available, series

    if not plotting_available():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    drawn = 0
    for index, path in sorted(trial_runs(plan, runs_dir).items()):
        try:
            steps, values = series(Run(path).thinned("metrics"), "val_loss")
        except ToygptError:
            continue
        if steps:
            label = ", ".join(f"{k}={v}" for k, v in plan.trials[index].params.items())
            ax.plot(steps, values, marker=".", label=f"{index}: {label}")
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("val loss")
    ax.set_title(f"sweep {plan.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = plan.folder / "curves.png"
    try:
        write_atomic(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
    return path


def trial_configs(plan: Plan, index: int):
    """(ModelConfig, TrainConfig) of a trial; a bad combination raises one line."""
    return build_configs(plan.options(plan.trials[index]))


def slurm_script(plan: Plan, runs_dir: Path, python: str, cwd: Path, cpus: int = 2) -> str:
    """A SLURM array job whose task K runs trial K of this sweep (same sweep folder)."""
    runs = Path(runs_dir).resolve()
    last = len(plan.trials) - 1
    return f"""#!/bin/bash
#SBATCH --job-name=toygpt-{plan.name}
#SBATCH --array=0-{last}
#SBATCH --cpus-per-task={cpus}
#SBATCH --output={runs / SWEEPS / plan.name}/slurm-%A_%a.out
# One array task per trial of sweep {plan.name} ({last + 1} trials). Every task shares
# the sweep folder; `toygpt sweep show {plan.name}` collects whatever has finished.
cd {cwd}
{python} -m toygpt_cli sweep trial {plan.name} "$SLURM_ARRAY_TASK_ID" --runs-dir {runs} \\
    --threads "${{SLURM_CPUS_PER_TASK:-{cpus}}}" --quiet
"""


def run_trial(plan: Plan, index: int, runs_dir: Path, *, callback=None, stop=None,
              command: list[str] | None = None) -> dict[str, Any] | None:  # fmt: skip
    """Run trial `index` to its end (or resume its run), score its whole val split, and
    record the result. A trial that cannot train (a bad combination, out of memory, a
    budget too small) is recorded as failed with its reason. Returns the result, or None
    when another process is training this trial, or it was stopped (it resumes later)."""
    from toygpt_cli.runs.folder import Run
    from toygpt_cli.runs.inference import evaluate_run, load_for_inference
    from toygpt_cli.runs.session import resume_training, start_training
    from toygpt_cli.storage import locks

    if (done := plan.result(index)) is not None:
        return done
    folder = plan.result_path(index).parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        hold = locks.acquire(folder)
    except locks.LockHeld:
        return None
    with hold:
        if (done := plan.result(index)) is not None:
            return done
        path = trial_runs(plan, runs_dir).get(index)
        try:
            if path is None:
                model_cfg, train_cfg = trial_configs(plan, index)
                extra = {"sweep": {"name": plan.name, "trial": index,
                                   "params": plan.trials[index].params}}  # fmt: skip
                trainer = start_training(
                    model_cfg, train_cfg, Path(plan.data), runs_dir, callback=callback,
                    command=command, label=plan.label(index), stop=stop, extra=extra,
                )  # fmt: skip
            elif Run(path).status()["status"] != "completed":
                trainer = resume_training(Run(path), callback=callback, command=command,
                                          stop=stop)  # fmt: skip
            else:
                trainer = None
            if trainer is not None:
                path = trainer.run_folder.path
                if trainer.run().status == "interrupted":
                    return None
            loaded = load_for_inference(str(path), runs_dir, dtype="float32")
            val = evaluate_run(loaded, ("val",))["splits"]["val"]["loss"]
        except (MemoryError, RuntimeError) as exc:
            text = str(exc).lower()
            if not (isinstance(exc, MemoryError) or "memory" in text):
                raise
            return finish(plan, index, "failed", path, "out of memory")
        except ToygptError as exc:
            return finish(plan, index, "failed", path, str(exc))
        status = Run(path).raw_status()
        return finish(plan, index, "completed", path, None, round(val, 5), status.get("step"),
                      status.get("wall_seconds"))  # fmt: skip
