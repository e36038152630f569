"""Interleaved trials, paired ratios with bootstrap intervals, and what the CPU did meanwhile.

One module for every benchmark that compares systems on this shared machine (issue 30):
- `run_interleaved`: every trial runs every system once, round-robin, in a fresh random order,
  so load from other work falls on all systems alike instead of on whichever block it hit;
- `paired_ratio`: per-trial ratios a/b of two systems (same trial = same background load) and a
  percentile bootstrap 95% interval of their median;
- `verdict`: "faster" / "slower" only where the interval excludes 1, else "not separated";
- `cpu_sample` / `cpu_share`: /proc/stat before and after each system's run, so every trial
  records the idle and steal share of the machine while it ran; `cpu_facts`: model and clock.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
VERDICTS = ("faster", "slower", "not separated")


def read_proc_stat(path: str = "/proc/stat") -> dict[str, int]:
    """The aggregate `cpu` line in clock ticks: user nice system idle iowait irq softirq steal."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    try:
        with open(path) as handle:
            first = handle.readline().split()
    except OSError:
        return {}
    if not first or first[0] != "cpu":
        return {}
    return dict(zip(names, (int(v) for v in first[1 : 1 + len(names)])))


def cpu_sample() -> dict[str, int]:
    return read_proc_stat()


def cpu_share(before: dict[str, int], after: dict[str, int]) -> dict[str, float | None]:
    """Idle (idle + iowait) and steal as shares of all ticks between two samples. The system
    under test keeps the cores busy, so idle near 0 is expected; what matters is that the
    shares are alike across systems of one trial (other agents' work shows as less idle for
    nobody in particular, steal as the hypervisor taking cores away)."""
    if not before or not after:
        return {"idle": None, "steal": None}
    delta = {k: after[k] - before[k] for k in before}
    total = sum(delta.values())
    if total <= 0:
        return {"idle": None, "steal": None}
    return {
        "idle": round((delta["idle"] + delta["iowait"]) / total, 4),
        "steal": round(delta["steal"] / total, 4),
    }


def cpu_facts() -> dict[str, object]:
    """CPU model, logical cores, and the clock the kernel reports now (per core MHz from
    /proc/cpuinfo; the cpufreq limits where the VM exposes them)."""
    model, mhz, ids = "unknown", [], {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name" and model == "unknown":
                    model = value
                elif key == "cpu MHz":
                    mhz.append(float(value))
                elif key in ("cpu family", "model", "stepping") and key not in ids:
                    ids[key] = value
    except OSError:
        pass
    # A VM may name the CPU only by brand ("AMD EPYC"): family/model/stepping say which generation
    # (AMD family 25 = Zen 3 / Zen 4; model 1 = Milan, 17 = Genoa).
    freq: dict[str, object] = {
        "cpu": model,
        "cpu_family_model_stepping": "/".join(ids.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "cores": os.cpu_count(),
        "cpu_mhz_now": [round(m) for m in mhz],
    }
    for key, name in (("cpuinfo_max_freq", "cpu_mhz_max"), ("cpuinfo_min_freq", "cpu_mhz_min")):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cpufreq/{key}") as handle:
                freq[name] = int(handle.read()) // 1000
        except OSError:
            freq[name] = "not exposed by this VM"
    return freq


@dataclass
class Trial:
    index: int
    order: list[str]
    # per system: {"seconds", "idle", "steal", "load_1m", ...whatever the runner returned}
    results: dict[str, dict] = field(default_factory=dict)


def run_interleaved(
    runners: dict[str, Callable[[], dict]],
    trials: int,
    seed: int = 0,
    on_trial: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """`trials` rounds; each round calls every runner once, in an order shuffled per round.
    A runner returns a dict (e.g. {"units": pairs done}); its wall time and the CPU's idle and
    steal share while it ran are added here. A runner that does untimed work around its pass
    (reading a server's counters) returns its pass's own `seconds`, which is kept."""
    rng = random.Random(seed)
    names = list(runners)
    done = []
    for index in range(trials):
        order = rng.sample(names, len(names))
        trial = Trial(index, order)
        for name in order:
            before, start = cpu_sample(), time.perf_counter()
            result = dict(runners[name]())
            result.setdefault("seconds", time.perf_counter() - start)
            result.update(load_1m=round(os.getloadavg()[0], 2), **cpu_share(before, cpu_sample()))
            trial.results[name] = result
        done.append(trial)
        if on_trial:
            on_trial(trial)
    return done


@dataclass(frozen=True)
class Ratio:
    point: float  # median of the per-trial ratios
    low: float
    high: float
    trials: int

    @property
    def verdict(self) -> str:
        return verdict(self.low, self.high)

    def as_dict(self) -> dict:
        return {
            "ratio": round(self.point, 4),
            "ci95": [round(self.low, 4), round(self.high, 4)],
            "trials": self.trials,
            "verdict": self.verdict,
        }

    def text(self) -> str:
        return f"{self.point:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.trials} trials): {self.verdict}"


def bootstrap_median(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (CONFIDENCE) of the median of `values`."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(resamples, len(values)))
    medians = np.median(values[draws], axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def paired_ratio(a: list[float], b: list[float], seed: int = 0) -> Ratio:
    """Per-trial a[i]/b[i] (rates of two systems measured in the same trial), their median and a
    bootstrap interval of it. Pairing cancels the load both saw in that trial."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired ratios need equal, non-empty trial lists, got {len(a)} and {len(b)}")
    ratios = np.asarray(a, dtype=np.float64) / np.asarray(b, dtype=np.float64)
    low, high = bootstrap_median(ratios, seed=seed)
    return Ratio(float(np.median(ratios)), low, high, len(ratios))


def verdict(low: float, high: float, at: float = 1.0) -> str:
    """'faster' when the whole interval is above `at`, 'slower' when below, else 'not separated'."""
    if low > at:
        return "faster"
    if high < at:
        return "slower"
    return "not separated"


def rates(trials: list[Trial], name: str, units: str = "units") -> list[float]:
    """units per second of one system, trial by trial."""
    return [t.results[name][units] / t.results[name]["seconds"] for t in trials]


def rate_summary(rates: list[float], latencies: list[float]) -> dict[str, Any]:
    """The committed results' per-system figures from trial rates (pairs/s) and request
    latencies (s): the median with its bootstrap 95% interval, the range and p50/p95 latency."""
    low, high = bootstrap_median(np.asarray(rates))
    return {
        "trials": [round(r, 3) for r in rates],
        "pairs_per_s": round(float(np.median(rates)), 3),
        "pairs_per_s_ci95": [round(low, 3), round(high, 3)],
        "pairs_per_s_min": round(min(rates), 3),
        "pairs_per_s_max": round(max(rates), 3),
        "p50_ms_per_request": round(float(np.percentile(latencies, 50)) * 1e3, 1),
        "p95_ms_per_request": round(float(np.percentile(latencies, 95)) * 1e3, 1),
        "latency_samples": len(latencies),
    }
