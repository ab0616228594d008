"""A synthesized AppMul library: jobs (method, seed, error threshold) run on a process pool or on Ray, their
designs pooled, thinned to the Pareto front of (error, proxy cost) and turned into AppMuls with LUT, structural
Verilog and provenance.

Jobs are deterministic given their seed and generation count (a ``time_s`` cap makes CGP load-dependent), so
the same settings give the same library on a local pool and on a Ray cluster.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fames.appmul.circuit import Circuit
from fames.appmul.core import AppMul, sanitize_name
from fames.appmul.synth.cgp import PROXIES, cgp
from fames.appmul.synth.error import METRICS, ErrorModel
from fames.appmul.synth.lac import lac
from fames.appmul.synth.network import FUNCTIONS, GATE_EQUIVALENTS, Network
from fames.errors import AppMulError

METHODS = ("lac", "cgp")
JOB_VERSION = "synth-job-1"  # bump when a search changes what the same settings produce
# the error a design gets that the metric calls error-free but that is not the exact multiplier (e.g. wrong only
# where the product is 0, which MRED does not count): error 0, the front's first point, stays the exact multiplier's
INEXACT_FLOOR = 1e-12
PROXY_SLACK = 0.25  # with a real cost: designs up to 25% dearer by proxy than the cheapest are costed too
PER_BOUND = 3  # ... at most this many functions per error bound
PER_FUNCTION = 4  # ... each with at most this many of its circuits
# CGP runs at MRED <= 20%; by default the grid is scaled to max_error (these values times max_error / 20)
DEFAULT_THRESHOLDS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0)


@dataclass(frozen=True)
class SynthConfig:
    """Settings of :func:`synthesize` (errors in the unit of ``metric``: percent for ``mred``/``er``)."""

    a_bits: int
    w_bits: int
    signed: bool = False
    methods: tuple[str, ...] = METHODS
    metric: str = "mred"
    max_error: float = 20.0
    # one CGP run per threshold (<= max_error) and seed; None: DEFAULT_THRESHOLDS scaled to max_error. With operand
    # weights the grid is first mapped to the weighted metric (threshold_scale)
    thresholds: tuple[float, ...] | None = None
    seeds: int = 2
    generations: int = 20000  # per CGP run
    proxy: str = "pdp"  # what CGP minimizes: "pdp" (switching energy x depth) or "area" (LAC always saves area)
    time_s: float | None = None  # optional wall-clock cap per job (then results depend on machine load)
    designs: int = 24  # library size: the best design within each CGP threshold, the rest at log-spaced bounds
    family_starts: bool = True  # CGP also starts from the families' Pareto-best designs within max_error
    rounds: int = 1  # round r > 1: CGP restarts at every threshold from the cheapest design found so far within it

    def __post_init__(self) -> None:
        from fames.appmul.core import MAX_BITS, MIN_BITS

        for b in (self.a_bits, self.w_bits):
            if not MIN_BITS <= b <= MAX_BITS:
                raise AppMulError(f"synthesis widths must lie in {MIN_BITS}..{MAX_BITS}, got {b}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise AppMulError(f"unknown synthesis method(s) {bad}; choose from {METHODS}")
        if self.metric not in METRICS:
            raise AppMulError(f"unknown error metric {self.metric!r}; choose one of {METRICS}")
        if self.proxy not in PROXIES:
            raise AppMulError(f"unknown cost proxy {self.proxy!r}; choose one of {PROXIES}")
        if not self.max_error > 0 or min(self.seeds, self.generations, self.designs, self.rounds) < 1:
            raise AppMulError("max_error must be > 0 and seeds, generations, designs, rounds >= 1")
        if self.thresholds is None:  # frozen: set once, so that repr (a cache key) shows the grid
            object.__setattr__(self, "thresholds", _scaled(DEFAULT_THRESHOLDS, self.max_error / 20.0))

    def cgp_thresholds(self) -> list[float]:
        """The error thresholds of the CGP runs: ``thresholds`` up to ``max_error``, and ``max_error``."""
        return sorted({t for t in self.thresholds if t <= self.max_error} | {self.max_error})

    def jobs(self, starts: dict[str, float] | None = None) -> list[tuple[str, int, float, str]]:
        """``(method, seed, threshold, start)`` of every job: one LAC path from the exact multiplier (to
        ``max_error``); CGP per threshold and seed from the exact multiplier, and per threshold from every other
        start (``starts``: name -> its error) whose error is within the threshold."""
        out: list[tuple[str, int, float, str]] = []
        if "lac" in self.methods:
            out.append(("lac", 0, self.max_error, "exact"))
        if "cgp" in self.methods:
            ths = self.cgp_thresholds()
            out += [("cgp", s, t, "exact") for t in ths for s in range(self.seeds)]
            for name, err in (starts or {}).items():
                out += [("cgp", 0, t, name) for t in ths if t >= err and name != "exact"]
        return out


@dataclass
class Design:
    """One synthesized design: its network, error, proxy cost and where it came from."""

    network: Network
    error: float
    cost: float
    method: str
    seed: int
    threshold: float
    extra: dict[str, Any] = field(default_factory=dict)


def exact_network(a_bits: int, w_bits: int, signed: bool) -> Network:
    """Our exact multiplier (the ``exact`` family's circuit) as the seed network."""
    return family_network("exact", {}, a_bits, w_bits, signed)


def family_network(family: str, params: dict[str, Any], a_bits: int, w_bits: int, signed: bool) -> Network:
    """The circuit of one family design as a network."""
    from fames.appmul.families import FAMILIES

    c = Circuit(a_bits, w_bits, family)
    c.set_output(FAMILIES[family].circuit(c, signed, **params), signed=signed)
    return Network.from_circuit(c, signed)


def start_networks(cfg: SynthConfig, model: ErrorModel, gate_cost: dict[int, float]) -> dict[str, Network]:
    """Where the searches start: the exact multiplier and (``family_starts``) the families' designs on the Pareto
    front of (error, proxy cost) within ``max_error``."""
    from fames.appmul.families import build_family

    nets = {"exact": exact_network(cfg.a_bits, cfg.w_bits, cfg.signed)}
    if not cfg.family_starts:
        return nets
    cands = []
    for m in build_family("all", cfg.a_bits, cfg.w_bits, cfg.signed):
        if m.provenance.get("family") == "exact":
            continue
        net = family_network(m.provenance["family"], m.provenance["params"], cfg.a_bits, cfg.w_bits, cfg.signed)
        err = model(net.output_values())
        if err <= cfg.max_error:
            cands.append(Design(net, err, proxy_cost(net, cfg.proxy, gate_cost), "family", 0, err,
                                {"start": m.name}))
    for d in pareto(cands):
        nets[d.extra["start"]] = d.network
    return nets


def gate_costs(liberty_path: str | os.PathLike, what: str = "area") -> dict[int, float]:
    """Cost per network function from the smallest matching cells of a liberty: ``area`` (um^2) or ``leakage``.

    Raises :class:`AppMulError` when the liberty lacks a cell for a two-input function and for its complement."""
    from fames.hw.liberty import read_liberty

    lib = read_liberty(liberty_path)
    tables = {"and": [(0, 0, 0, 1)], "or": [(0, 1, 1, 1)], "xor": [(0, 1, 1, 0)], "nand": [(1, 1, 1, 0)],
              "nor": [(1, 0, 0, 0)], "xnor": [(1, 0, 0, 1)], "andn": [(0, 0, 1, 0), (0, 1, 0, 0)],
              "orn": [(1, 0, 1, 1), (1, 1, 0, 1)]}
    inv = lib.inverter()
    if inv is None:
        raise AppMulError(f"liberty {liberty_path} has no inverter")

    def value(c: Any) -> float:
        return float(c.area if what == "area" else c.leakage_nw)

    out: dict[int, float] = {FUNCTIONS.index("not"): value(inv), FUNCTIONS.index("buf"): 0.0,
                             FUNCTIONS.index("zero"): 0.0, FUNCTIONS.index("one"): 0.0}
    for name, truths in tables.items():
        cells = [c for t in truths if (c := lib.find(t, 2)) is not None]
        if cells:
            out[FUNCTIONS.index(name)] = min(value(c) for c in cells)
    complement = {"and": "nand", "or": "nor", "xor": "xnor", "nand": "and", "nor": "or", "xnor": "xor"}
    for name, other in complement.items():
        k = FUNCTIONS.index(name)
        if k not in out and FUNCTIONS.index(other) in out:
            out[k] = out[FUNCTIONS.index(other)] + out[FUNCTIONS.index("not")]
    for name, base in (("andn", "and"), ("orn", "or")):
        k = FUNCTIONS.index(name)
        if k not in out and FUNCTIONS.index(base) in out:
            out[k] = out[FUNCTIONS.index(base)] + out[FUNCTIONS.index("not")]
    missing = [f for i, f in enumerate(FUNCTIONS) if i not in out]
    if missing:
        raise AppMulError(f"liberty {liberty_path} has no cells for {missing}")
    return out


def proxy_cost(net: Network, proxy: str, gate_cost: dict[int, float]) -> float:
    """The network's ``"area"`` (sum of gate costs) or ``"pdp"`` proxy (:meth:`Network.pdp_proxy`)."""
    act = net.active()
    return net.pdp_proxy(net.simulate(act), act, gate_cost) if proxy == "pdp" else net.cost(gate_cost, act)


def job_key(cfg: SynthConfig, job: tuple[str, int, float, str], start: Network, weights: np.ndarray | None,
            gate_cost: dict[int, float]) -> str:
    """Content key of a job's result: the settings a single job depends on (not how many seeds, rounds,
    thresholds or designs the whole synthesis has, so a run with more rounds reuses the earlier jobs), the job, its
    start network, the operand weights, the gate costs."""
    from fames.io import content_hash

    w = "" if weights is None else content_hash(np.ascontiguousarray(weights, dtype=np.float64).tobytes())
    settings = (cfg.a_bits, cfg.w_bits, cfg.signed, cfg.metric, cfg.generations, cfg.proxy, cfg.time_s)
    return content_hash(JOB_VERSION, repr(settings), repr(job), repr((start.nodes, start.outputs)), w,
                        repr(sorted(gate_cost.items())))


def run_job(
    cfg: SynthConfig, job: tuple[str, int, float, str], start: Network, weights: np.ndarray | None,
    gate_cost: dict[int, float] | None,
) -> list[Design]:
    """Every design one job passes from ``start`` (picklable: runs in a worker process or a Ray task). Results are
    kept in the fames cache under the job's content key, so an interrupted synthesis resumes where it stopped."""
    from fames.io import cache_dir, read_checked_json, write_cache_json

    gc = gate_cost or GATE_EQUIVALENTS
    path = cache_dir() / "synth-jobs" / f"{job_key(cfg, job, start, weights, gc)}.json"
    got = read_checked_json(path)
    if isinstance(got, list):
        return [Design(Network(cfg.a_bits, cfg.w_bits, cfg.signed, [tuple(n) for n in d["nodes"]], d["outputs"]),
                       d["error"], d["cost"], d["method"], d["seed"], d["threshold"], d["extra"]) for d in got]
    out = _run_job(cfg, job, start, weights, gc)
    write_cache_json(path, [{"nodes": d.network.nodes, "outputs": d.network.outputs, "error": d.error,
                               "cost": d.cost, "method": d.method, "seed": d.seed, "threshold": d.threshold,
                               "extra": d.extra} for d in out])
    return out


def _run_job(
    cfg: SynthConfig, job: tuple[str, int, float, str], start: Network, weights: np.ndarray | None,
    gate_cost: dict[int, float],
) -> list[Design]:
    method, seed, threshold, start_name = job
    model = ErrorModel(cfg.a_bits, cfg.w_bits, cfg.signed, cfg.metric, weights)
    if method == "lac":
        steps = lac(start, model, threshold, gate_cost, time_s=cfg.time_s)
    else:
        steps = cgp(start, model, threshold, gate_cost, seed=seed, generations=cfg.generations, time_s=cfg.time_s,
                    proxy=cfg.proxy)
    extra = {} if start_name == "exact" else {"start": start_name}
    if extra:  # the family design itself enters once, as a "seed" (see _run_all)
        steps = steps[1:]
    return [Design(s.network, s.error, s.cost, method, seed, threshold, dict(extra)) for s in steps]


def pareto(designs: Sequence[Design]) -> list[Design]:
    """The designs no other beats in both error and cost (ties: the first), by increasing error."""
    out: list[Design] = []
    for d in sorted(designs, key=lambda d: (d.error, d.cost)):
        if not out or d.cost < out[-1].cost - 1e-9:
            out.append(d)
    return out


def _bounds(designs: Sequence[Design], n: int, max_error: float) -> np.ndarray:
    """``n`` error bounds log-spaced from the smallest nonzero error of ``designs`` up to ``max_error``."""
    errs = [d.error for d in designs if d.error > 0]
    lo = max(min(errs, default=max_error), max_error * 1e-4)
    return np.geomspace(lo, max_error, n) if n > 1 else np.array([max_error] * n)  # one bound: the loosest


def _thin_bounds(designs: Sequence[Design], n: int, max_error: float, anchors: Sequence[float]) -> list[float]:
    """``n`` error bounds: the ``anchors`` within ``max_error`` (dropped when they alone would fill ``n``), the rest
    log-spaced (:func:`_bounds`)."""
    anchors = sorted({float(t) for t in anchors if 0 < t <= max_error})
    if len(anchors) >= n:
        anchors = []
    return sorted({*anchors, *_bounds(designs, n - len(anchors), max_error).tolist()})


def thin(front: Sequence[Design], n: int, max_error: float, anchors: Sequence[float] = ()) -> list[Design]:
    """At most ``n`` designs of a Pareto ``front``: for error bounds up to ``max_error`` (the ``anchors``, e.g. the
    CGP thresholds, and log-spaced ones), the cheapest design within each (exact-error designs always kept)."""
    if len(front) <= n:
        return list(front)
    exact = [d for d in front if d.error <= 0]
    rest = [d for d in front if d.error > 0]
    if not rest or n <= len(exact[:1]):
        return exact[:1]
    chosen: dict[int, Design] = {}
    for b in _thin_bounds(rest, n - len(exact[:1]), max_error, anchors):
        within = [d for d in rest if d.error <= b * (1 + 1e-9)]
        if within:
            d = min(within, key=lambda d: d.cost)
            chosen[id(d)] = d
    return exact[:1] + sorted(chosen.values(), key=lambda d: d.error)


def shortlist(designs: Sequence[Design], n: int, max_error: float, slack: float = PROXY_SLACK,
              per_bound: int = PER_BOUND, per_function: int = PER_FUNCTION,
              anchors: Sequence[float] = ()) -> list[Design]:
    """The designs worth a real costing: the family designs the searches started from (``method == "seed"``),
    and at each of ``n`` error bounds (those of :func:`thin` with the same ``anchors``, 0 included) up to
    ``per_bound`` functions within the bound whose proxy cost is at most ``1 + slack`` times the cheapest's, each
    with up to ``per_function`` of its distinct circuits (the cheapest by proxy). The proxy ranks near-ties wrongly
    often enough (4x4u, NanGate: a family design 16% dearer by proxy than the front's at MRED <= 2% has the lower
    PDP) that the front is chosen on real costs; and one function's circuits differ in real cost far more than in
    proxy (3x3u, MRED 0.33%: PDP/exact 0.83-1.26 among ten circuits within 13% of each other by proxy)."""
    circuits: dict[bytes, list[Design]] = {}  # function -> its distinct circuits, cheapest proxy first
    seen: set[str] = set()
    for d in sorted(designs, key=lambda d: (d.error, d.cost)):
        small = d.network.compact()
        key = repr((small.nodes, small.outputs))
        if key in seen:
            continue
        seen.add(key)
        fn = circuits.setdefault(hashlib.blake2b(d.network.output_values().tobytes(), digest_size=16).digest(), [])
        if len(fn) < per_function:
            fn.append(d)
    groups = list(circuits.values())  # each function's circuits; its first (cheapest) stands for it
    chosen = {id(d): d for d in designs if d.method == "seed" and d.error <= max_error}
    for b in [0.0, *_thin_bounds([g[0] for g in groups], n, max_error, anchors)]:
        within = sorted((g for g in groups if g[0].error <= b * (1 + 1e-9)), key=lambda g: g[0].cost)
        for g in within[:per_bound]:
            if g[0].cost <= within[0][0].cost * (1 + slack):
                chosen.update((id(c), c) for c in g)
    return sorted(chosen.values(), key=lambda d: (d.error, d.cost))


def to_appmul(d: Design, cfg: SynthConfig, index: int, tag: str = "") -> AppMul:
    """The design as an AppMul (LUT = simulation of the circuit whose Verilog it carries, checked against the
    network's own simulation)."""
    kind = "s" if cfg.signed else "u"
    name = f"synth_{cfg.a_bits}x{cfg.w_bits}{kind}_{d.method}{tag}_{index:03d}"
    top = sanitize_name(name)
    c = d.network.to_circuit(name)
    lut = c.simulate(cfg.signed)
    if not np.array_equal(lut, d.network.lut()):
        raise AppMulError(f"{name}: the circuit of the design disagrees with its network (internal error)")
    return AppMul(
        name=name, a_bits=cfg.a_bits, w_bits=cfg.w_bits, a_signed=cfg.signed, w_signed=cfg.signed, lut=lut,
        verilog=c.to_verilog(top), top=top, structural=True,
        provenance={"family": "synth", "method": d.method, "seed": d.seed, "threshold": d.threshold,
                    "metric": cfg.metric, "error": d.error, "proxy_cost": d.cost, "gates": c.gate_count(),
                    **d.extra},
    )


def _end_with_parent() -> None:
    """In a worker process: end when the process that started it does (a parent killed with SIGKILL left its
    workers running the queue). Linux only (prctl PR_SET_PDEATHSIG); elsewhere nothing."""
    import contextlib
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it stops the workers)


def _run_all(cfg: SynthConfig, weights: np.ndarray | None, gate_cost: dict[int, float], workers: int,
             ray_address: str | None, progress: bool) -> list[list[Design]]:

    model = ErrorModel(cfg.a_bits, cfg.w_bits, cfg.signed, cfg.metric, weights)
    starts = start_networks(cfg, model, gate_cost)
    errors = {n: model(net.output_values()) for n, net in starts.items()}
    jobs = cfg.jobs(errors)
    # the family seeds are points of the searches too (a design no descendant improves on stays on the front)
    seeds = [Design(net, errors[n], proxy_cost(net, cfg.proxy, gate_cost), "seed", 0, errors[n], {"start": n})
             for n, net in starts.items()]
    results = [*_run_jobs(cfg, jobs, starts, weights, gate_cost, workers, ray_address, progress), seeds]
    # each further round restarts every threshold's CGP from the cheapest design found so far within it
    pool: list[Design] = []
    costs: list[float] = []  # cfg.proxy of every design in pool (LAC paths carry their area), each computed once
    for r in range(1, cfg.rounds if "cgp" in cfg.methods else 1):
        new = [d for res in results for d in res][len(pool):]
        pool += new
        costs += [proxy_cost(d.network, cfg.proxy, gate_cost) for d in new]
        again: dict[str, Network] = {}
        jobs = []
        for t in cfg.cgp_thresholds():
            within = [(c, i) for i, (c, d) in enumerate(zip(costs, pool, strict=True)) if d.error <= t]
            if within:
                again[name := f"round{r + 1}_{t:g}"] = pool[min(within)[1]].network
                jobs.append(("cgp", r, t, name))
        results += _run_jobs(cfg, jobs, again, weights, gate_cost, workers, ray_address, progress)
    return results


def _run_jobs(cfg: SynthConfig, jobs: list, starts: dict[str, Network], weights: np.ndarray | None,
              gate_cost: dict[int, float], workers: int, ray_address: str | None, progress: bool) -> list[list[Design]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=f"synth {cfg.a_bits}x{cfg.w_bits}", unit="job", disable=not progress)
    try:
        if ray_address is not None:
            from fames.cluster import connect_ray

            ray = connect_ray(ray_address)
            task = ray.remote(run_job)
            refs = [task.remote(cfg, j, starts[j[3]], weights, gate_cost) for j in jobs]
            out = []
            for r in refs:
                out.append(ray.get(r))
                bar.update()
            return out
        if workers <= 1 or len(jobs) == 1:
            out = []
            for j in jobs:
                out.append(run_job(cfg, j, starts[j[3]], weights, gate_cost))
                bar.update()
            return out
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_end_with_parent)
        try:
            futs = [pool.submit(run_job, cfg, j, starts[j[3]], weights, gate_cost) for j in jobs]
            out = []
            for f in futs:
                out.append(f.result())
                bar.update()
        except BaseException:  # Ctrl-C, a failed job: stop now (the pool's exit ran the whole queue first: 46 of
            procs = list((getattr(pool, "_processes", None) or {}).values())  # 48 jobs after a Ctrl-C; what finished
            pool.shutdown(wait=False, cancel_futures=True)  # is in the job cache)
            for proc in procs:
                proc.terminate()
            raise
        pool.shutdown()
        return out
    finally:
        bar.close()


def synthesize(
    cfg: SynthConfig,
    weights: np.ndarray | None = None,
    gate_cost: dict[int, float] | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    on_front: Callable[[list[Design], list[Design]], None] | None = None,
    cost: Callable[[list[AppMul]], Sequence[float]] | None = None,
) -> list[AppMul]:
    """Run every job of ``cfg`` and return the library: the thinned Pareto front as AppMuls (exact first).

    ``weights``: operand-pair probabilities ``(2**a_bits, 2**w_bits)`` for operand-aware error (None: uniform);
    ``gate_cost``: proxy cost per function (:func:`gate_costs`; default :data:`GATE_EQUIVALENTS`);
    ``ray_address``: run the jobs as Ray tasks (``"auto"``, ``"local"`` or ``host:port``), else on ``workers``
    local processes (default: the CPU count). ``on_front(all_designs, front)`` sees every design before thinning.
    ``cost(appmuls) -> costs`` (e.g. PDP in fJ from the cost engine): the proxy only shortlists
    (:func:`shortlist`), and the front and its thinning use these real costs.
    """
    gc = gate_cost or GATE_EQUIVALENTS
    cfg = weighted_config(cfg, weights)
    results = _run_all(cfg, weights, gc, workers or os.cpu_count() or 1, ray_address, progress)
    designs = [d for r in results for d in r]
    exact = exact_network(cfg.a_bits, cfg.w_bits, cfg.signed).output_values()
    for d in designs:  # one cost for the front: LAC paths are scored by area, CGP by cfg.proxy
        d.cost = proxy_cost(d.network, cfg.proxy, gc)
        if d.error <= 0 and not np.array_equal(d.network.output_values(), exact):
            d.error = INEXACT_FLOOR  # no error by the metric (MRED is blind to zero products), but not exact
    front = pareto(designs)
    anchors = cfg.cgp_thresholds() if "cgp" in cfg.methods else []  # each requested error level keeps its best
    if on_front is not None:
        on_front(designs, front)
    if cost is None:
        kept_front = thin(front, cfg.designs, cfg.max_error, anchors)
        return _distinct([to_appmul(d, cfg, i) for i, d in enumerate(kept_front)])
    cands = shortlist(designs, cfg.designs, cfg.max_error, anchors=anchors)
    made = [to_appmul(d, cfg, i) for i, d in enumerate(cands)]
    real = [replace(d, cost=float(c)) for d, c in zip(cands, cost(made), strict=True)]
    kept = {id(d) for d in thin(pareto(real), cfg.designs, cfg.max_error, anchors)}
    return [m for d, m in zip(real, made, strict=True) if id(d) in kept]


def weighted_config(cfg: SynthConfig, weights: np.ndarray | None) -> SynthConfig:
    """``cfg`` as :func:`synthesize` runs it with operand ``weights``: the CGP thresholds (and for ``omse``, which
    has no unit of its own to bound, the bound too) mapped by :func:`threshold_scale`; ``cfg`` itself without."""
    if weights is None:
        return cfg
    k = threshold_scale(cfg, weights)
    return replace(cfg, thresholds=_scaled(cfg.thresholds, k),
                   **({"max_error": _scaled((cfg.max_error,), k)[0]} if cfg.metric == "omse" else {}))


def threshold_scale(cfg: SynthConfig, weights: np.ndarray) -> float:
    """The factor from the uniform metric to the metric weighted by ``weights``: the median, over the family designs
    with a nonzero uniform error within ``max_error``, of weighted / uniform error (1 when there is none).

    Operand weights concentrate on a few operand pairs (e.g. a ReLU layer's zero activations), so the weighted errors
    of the same designs are often 5-20x smaller than the uniform ones; the uniform grid would then spend every CGP run
    on loose thresholds and leave the mild end, where a layer's designs are chosen, to chance. ``max_error`` stays the
    bound in the weighted metric's own unit, except for ``omse`` (a layer's output error, whose scale grows with
    the fan-in), which maps from the uniform ``mse`` and has its bound mapped too (:func:`synthesize`)."""
    from fames.appmul.families import build_family

    uniform = ErrorModel(cfg.a_bits, cfg.w_bits, cfg.signed, "mse" if cfg.metric == "omse" else cfg.metric)
    weighted = ErrorModel(cfg.a_bits, cfg.w_bits, cfg.signed, cfg.metric, weights)
    ratios = []
    for m in build_family("all", cfg.a_bits, cfg.w_bits, cfg.signed):
        v = m.lut.reshape(-1).astype(np.int64)
        u = uniform(v)
        if 0 < u <= cfg.max_error:
            ratios.append(weighted(v) / u)
    scale = float(np.median(ratios)) if ratios else 1.0
    return scale if scale > 0 else 1.0  # every family design exact on the weighted pairs: keep the grid


def _scaled(values: Sequence[float], k: float) -> tuple[float, ...]:
    """``values`` times ``k``, to 4 significant digits (stable job keys)."""
    return tuple(float(f"{t * k:.4g}") for t in values)


def _distinct(appmuls: list[AppMul]) -> list[AppMul]:
    """The first AppMul of every distinct LUT, in order."""
    seen: set[bytes] = set()
    out = []
    for m in appmuls:
        if (key := m.lut.tobytes()) not in seen:
            seen.add(key)
            out.append(m)
    return out


def front_table(designs: Sequence[Design]) -> list[dict[str, Any]]:
    """Rows ``{error, cost, method, seed, threshold, start}`` of designs (for reports and plots)."""
    return [{"error": d.error, "cost": d.cost, "method": d.method, "seed": d.seed, "threshold": d.threshold,
             "start": d.extra.get("start", "exact")} for d in designs]


__all__ = ["DEFAULT_THRESHOLDS", "Design", "METHODS", "SynthConfig", "exact_network", "family_network",
           "front_table", "gate_costs", "pareto", "proxy_cost", "shortlist", "start_networks", "synthesize", "thin",
           "threshold_scale", "to_appmul", "weighted_config"]
