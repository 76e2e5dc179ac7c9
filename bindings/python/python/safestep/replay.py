"""Replay recorded controller event streams through the bindings and compare bit for bit.

Two sources:

- :func:`replay_streams` -- the ``core_streams.json`` fixture that safestep-core itself
  recorded (``cargo run -p safestep-fixture``), floats as ``float.hex()``.
- :func:`replay_controller_csv` -- a ``safestep run`` folder's ``controller.csv`` (one row
  per event and layer) with the run's ``config.toml``: the ``[scheduler]`` table holds the
  core's ``SchedulerConfig`` fields, ``examples`` the population ``N`` used for the
  finite-population factor when ``[statistics] finite_population = true``, and
  ``examples``/``batch_size``/``epochs`` give the steps per task.

Both return a :class:`ReplayResult`; ``result.mismatches`` lists every field that differs
(empty means every decision, learning rate and statistic is bit-identical).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from ._safestep import LayerScheduler, NoiseStats, SchedulerConfig

PathLike = Union[str, Path]

#: Report fields compared after each replayed event (the decision is compared too).
REPORT_FLOATS = (
    "lr_before",
    "lr_after",
    "rho",
    "vol",
    "snr_g",
    "snr_v",
    "snr",
    "rho_g",
    "rho_vol",
    "rho_combined",
    "bound",
    "g2_ema",
    "noise_ema",
)

#: Noise statistics compared after each replayed event.
NOISE_FLOATS = ("mean_grad_sq", "variance", "noise", "unbiased_grad_sq")


@dataclass
class ReplayResult:
    """What a replay compared: ``events`` (event × layer rows) and the differences."""

    events: int = 0
    decisions: Dict[str, int] = field(default_factory=dict)
    mismatches: List[str] = field(default_factory=list)

    def check(self) -> None:
        """Raises ``AssertionError`` listing the first differences, if any."""
        if self.mismatches:
            head = "\n  ".join(self.mismatches[:20])
            raise AssertionError(f"{len(self.mismatches)} mismatches:\n  {head}")


def _hexf(x: float) -> str:
    return float(x).hex()


def _unhex(x: Any) -> Any:
    if isinstance(x, str):
        return float.fromhex(x)
    return x


def _config_from_hex(fields: Mapping[str, Any]) -> SchedulerConfig:
    def value(v: Any) -> Any:
        if isinstance(v, str) and (v.startswith(("0x", "-0x")) or v in ("inf", "-inf")):
            return float.fromhex(v)
        return v

    return SchedulerConfig(**{k: value(v) for k, v in fields.items()})


def replay_streams(path: PathLike) -> Dict[str, ReplayResult]:
    """Replays every scenario of a ``core_streams.json`` fixture; one result per name."""
    doc = json.loads(Path(path).read_text())
    results: Dict[str, ReplayResult] = {}
    for sc in doc["scenarios"]:
        res = ReplayResult()
        cfg = _config_from_hex(sc["config"])
        layers = [LayerScheduler(cfg, float.fromhex(sc["lr0"])) for _ in range(sc["layers"])]
        for k, ev in enumerate(sc["events"]):
            inp = ev["inputs"]
            sched = layers[ev["layer"]]
            if ev["begin_task"]:
                sched.begin_task()
            if inp["noise_from"] == "variance":
                noise = NoiseStats.from_variance(
                    float.fromhex(inp["mean_grad_sq"]),
                    float.fromhex(inp["variance"]),
                    inp["batch"],
                    inp["population"],
                )
            else:
                noise = NoiseStats.from_sample_sq_norms(
                    float.fromhex(inp["mean_grad_sq"]),
                    float.fromhex(inp["sum_sample_sq_norms"]),
                    inp["batch"],
                    inp["population"],
                )
            report = sched.observe(
                float.fromhex(inp["alpha_agg"]),
                float.fromhex(inp["sharpness"]),
                noise,
                mean_multiplier=float.fromhex(inp["mean_multiplier"]),
                lr_used=_unhex(inp["lr_used"]),
                step_in_task=inp["step_in_task"],
                steps_per_task=inp["steps_per_task"],
                step=inp["step"],
            )
            where = f"{sc['name']} event {k} layer {ev['layer']}"
            for name in NOISE_FLOATS:
                got, want = _hexf(getattr(noise, name)), ev["noise"][name]
                if got != want:
                    res.mismatches.append(f"{where}: noise.{name} {got} != {want}")
            _compare_report(res, where, report, ev["report"], hexed=True)
        for l, (sched, want) in enumerate(zip(layers, sc["final_state"])):
            got = [_hexf(x) for x in sched.state_dict()["state"]]
            if got != want:
                res.mismatches.append(f"{sc['name']} layer {l}: final state {got} != {want}")
        results[sc["name"]] = res
    return results


def _compare_report(
    res: ReplayResult, where: str, report: Any, want: Mapping[str, Any], hexed: bool
) -> None:
    res.events += 1
    res.decisions[report.decision] = res.decisions.get(report.decision, 0) + 1
    if report.decision != want["decision"]:
        res.mismatches.append(f"{where}: decision {report.decision} != {want['decision']}")
    for name in REPORT_FLOATS:
        if name not in want:
            continue
        got = _hexf(getattr(report, name))
        exp = want[name] if hexed else _hexf(float(want[name]))
        if got != exp:
            res.mismatches.append(f"{where}: {name} {got} != {exp}")


def load_run_config(path: PathLike) -> Dict[str, Any]:
    """Reads a run's ``config.toml`` (``tomllib``, or ``tomli`` before Python 3.11)."""
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef]
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(
                "reading config.toml needs Python >= 3.11 or `pip install tomli`"
            ) from e
    with open(path, "rb") as f:
        return tomllib.load(f)


def steps_per_task(examples: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps of one task as ``safestep run`` counts them: per epoch, batches of
    ``batch_size`` with the last one kept only if it has at least two examples."""
    batches = sum(
        1 for start in range(0, examples, batch_size) if min(batch_size, examples - start) >= 2
    )
    return batches * epochs


def replay_controller_csv(
    csv_path: PathLike,
    config_path: Optional[PathLike] = None,
    *,
    steps_per_task_override: Optional[int] = None,
) -> ReplayResult:
    """Replays a ``controller.csv`` through fresh schedulers (one per layer, ``lr0`` = the
    run's ``lr``) and compares every decision, lr and statistic with the recorded ones.

    ``config_path`` defaults to ``config.toml`` beside the CSV. A new value in the ``task``
    column calls ``begin_task()`` on every layer (``method = "reset"`` starts fresh
    schedulers instead). ``lr_applied`` is passed as ``lr_used``.
    """
    csv_path = Path(csv_path)
    conf = load_run_config(config_path or csv_path.with_name("config.toml"))
    cfg = SchedulerConfig(**_core_fields(conf.get("scheduler", {})))
    stats = conf.get("statistics", {})
    finite = stats.get("finite_population", conf.get("scheduler", {}).get("finite_population"))
    population = int(conf["examples"]) if finite else None
    if steps_per_task_override is not None:
        spt = steps_per_task_override
    else:
        spt = steps_per_task(int(conf["examples"]), int(conf["batch_size"]), int(conf["epochs"]))
    lr0 = float(conf["lr"])
    reset = conf.get("method") == "reset"
    res = ReplayResult()
    layers: Dict[int, LayerScheduler] = {}
    task: Optional[int] = None
    with open(csv_path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            t, layer = int(row["task"]), int(row["layer"])
            if task is not None and t != task:
                if reset:
                    layers = {}
                else:
                    for s in layers.values():
                        s.begin_task()
            task = t
            sched = layers.setdefault(layer, LayerScheduler(cfg, lr0))
            where = f"row {i + 2} (step {row['step']}, layer {layer})"
            # The scheduler's lr before the event (before any method multiplier).
            if _hexf(sched.lr) != _hexf(float(row["lr_before"])):
                res.mismatches.append(f"{where}: lr_before {sched.lr!r} != {row['lr_before']}")
            noise = NoiseStats.from_sample_sq_norms(
                float(row["mean_grad_sq"]),
                float(row["sum_sample_sq_norms"]),
                int(row["batch"]),
                population,
            )
            for name in ("variance", "noise", "unbiased_grad_sq"):
                if name in row and _hexf(getattr(noise, name)) != _hexf(float(row[name])):
                    res.mismatches.append(f"{where}: {name} {getattr(noise, name)!r} != {row[name]}")
            report = sched.observe(
                float(row["alpha_agg"]),
                float(row["sharpness"]),
                noise,
                mean_multiplier=float(row["mean_multiplier"]),
                lr_used=float(row["lr_applied"]),
                step_in_task=int(row["step_in_task"]),
                steps_per_task=spt,
                step=int(row["step"]),
            )
            _compare_report(res, where, report, row, hexed=False)
    return res


def _core_fields(table: Mapping[str, Any]) -> Dict[str, Any]:
    """The entries of a ``[scheduler]`` table that are core ``SchedulerConfig`` fields (the
    host may keep its own settings, e.g. ``power_tol``, in the same table)."""
    return {k: v for k, v in table.items() if k in SchedulerConfig.FIELDS}
