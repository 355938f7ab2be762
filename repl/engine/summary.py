"""summary.json as docs/summary.md specifies it, and the short table printed at the end of a run."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from torch import nn

from repl.config import TrainConfig
from repl.engine import measure
from repl.engine.distributed import DistInfo
from repl.engine.measure import StepTimer
from repl.engine.status import RunStatus
from repl.method.plan import Plan
from repl.method.schedule import Phase, Schedule
from repl.tasks.registry import task_spec


class RunSummary:
    """Collects what a run measured and writes it as the contract's summary.json."""

    def __init__(self, cfg: TrainConfig, plan: Plan, task, dist: DistInfo) -> None:
        self.cfg, self.plan, self.task, self.dist = cfg, plan, task, dist
        self.env = measure.environment_info(dist.device)
        self.probe: Optional[Dict[str, Any]] = None  # flops and memory estimate of one training step

    def build(self, *, status: RunStatus, model: nn.Module, metrics: Dict[str, float], timer: StepTimer, train_s: float,
              epochs_done: int, steps_done: int, phase: Phase = Phase.METHOD,
              phases_entered: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
        """The summary dict for the run's current state.

        Under a schedule (repl.start / repl.restore) `phases_entered` lists each phase the run has entered (the
        Trainer's record: phase, epoch, step, params, probe); params, FLOPs and memory are those of the method's
        phase once it has begun, else of the current one."""
        method = next((p for p in phases_entered if p["phase"] == Phase.METHOD.value), None)
        params = method["params"] if method is not None else measure.count_parameters(model)
        probe = (method or {}).get("probe") or self.probe or {}
        estimate = probe.get("memory", {}).get("total")  # None: no step of this phase ran in this process
        peak = measure.peak_memory_bytes(self.dist.device) if self.dist.device.type == "cuda" else None
        primary = self.task.primary
        timing = timer.summary()
        timed = timing["steps"] > 0  # a resume with no step left times nothing: null, never a measured 0
        return {
            "status": RunStatus(status).value,  # the plain string
            "experiment": self.cfg.experiment_name,
            "task": self.task.name,
            "dataset": self.cfg.dataset.name,
            "input_size": self.cfg.dataset.input_size if task_spec(self.task.name).takes_images else None,
            "model": self.cfg.model.name,
            "model_source": self.cfg.model.source,
            "method": self.plan.method,
            "plan": self.plan.to_dict(),
            "params": {"total": params["total"], "trainable": params["trainable"],
                       "replaced": self.plan.params_replaced, "fusion": self.plan.params_fusion,
                       "phase": (Phase.METHOD if method is not None else phase).value},
            "memory": {"peak_bytes": _int_or_none(peak if peak is not None else estimate),
                       "estimate_bytes": _int_or_none(estimate),
                       "peak_source": "cuda_allocator" if peak is not None else "estimate",
                       "estimate_breakdown": probe.get("memory", {}), "device": self.env["device"]},
            "flops": {"train_step": _int_or_none(probe.get("flops"))},
            "time": {"train_s": float(train_s), "epoch_s": float(timing["epoch_s"]) if timed else None,
                     "step_s": float(timing["step_s"]) if timed else None},
            "throughput": {"train_per_s": float(timing["throughput"]) if timed else None, "unit": self.task.unit},
            "metrics": metrics,
            "primary": {"name": primary, "value": metrics.get(primary), "higher_is_better": self.task.higher_is_better},
            "schedule": self.schedule(phase, phases_entered),
            "epochs_done": int(epochs_done),
            "steps_done": int(steps_done),
            "seed": self.cfg.seed,
            "world_size": self.dist.world_size,
            "env": self.env,
        }

    def schedule(self, phase: Phase, phases_entered: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        """summary.json's "schedule": repl.start / repl.restore, the planned phases with their epochs (0-based, end
        excluded), the current phase, and each phase entered with the epoch and step it began at and its counts."""
        schedule = Schedule.of(self.cfg.repl, self.cfg.trainer.epochs)
        entered: List[Dict[str, Any]] = [{k: v for k, v in p.items() if k != "probe"} for p in phases_entered]
        for entry, record in zip(entered, phases_entered):
            probe = record.get("probe") or {}
            entry["flops_train_step"] = probe.get("flops")
            entry["memory_estimate_bytes"] = probe.get("memory", {}).get("total")
        return {"start": schedule.start, "restore": schedule.restore, "phase": phase.value,
                "phases": [{"phase": p.value, "epochs": [lo, hi]} for p, lo, hi in schedule.spans()],
                "entered": entered}

    @staticmethod
    def table(summary: Dict[str, Any]) -> str:
        """A few lines a researcher reads at the end of a run."""
        p, t, m = summary["params"], summary["time"], summary["memory"]
        primary = summary["primary"]
        value = "n/a" if primary["value"] is None else f"{primary['value']:.2f}"
        rows = [
            ("status", summary["status"]),
            ("model / data", f"{summary['model']} on {summary['dataset']}"),
            ("method", f"{summary['method']} (blocks {summary['plan'].get('blocks', [])})"),
            (primary["name"], value),
            ("params total / trainable", f"{p['total']:,} / {p['trainable']:,}"),
            ("params replaced / fusion", f"{p['replaced']:,} / {p['fusion']:,}"),
            ("train FLOPs / step", _shown(summary["flops"]["train_step"], 1e-9, ".3f", " G")),
            (f"memory ({m['peak_source']})", _shown(m["peak_bytes"], 2**-20, ".1f", " MiB")),
            ("time train / step", f"{t['train_s']:.1f} s / " + _shown(t["step_s"], 1e3, ".1f", " ms")),
            ("throughput", _shown(summary["throughput"]["train_per_s"], 1, ".1f", f" {summary['throughput']['unit']}/s")),
            ("epochs / steps", f"{summary['epochs_done']} / {summary['steps_done']}"),
        ]
        schedule = summary.get("schedule") or {}
        if schedule.get("start") or schedule.get("restore"):
            rows.insert(4, ("params of phase", summary["params"]["phase"]))
            rows.append(("phases (epoch begun)", ", ".join(f"{p['phase']} ({p['epoch']})" for p in schedule["entered"])))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _int_or_none(value: Any) -> Optional[int]:
    """A measured count as an int; None when nothing measured it."""
    return None if value is None else int(value)


def _shown(value: Optional[float], scale: float, spec: str, unit: str) -> str:
    """`value * scale` formatted for the end-of-run table; "not measured" for None."""
    return "not measured" if value is None else f"{value * scale:{spec}}{unit}"
