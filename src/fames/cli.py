"""The ``fames`` command line. Every subcommand has a Python equivalent named in its help."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

from fames.allocator import keep_freed_memory
from fames.appmul.synth.error import METRICS
from fames.appmul.synth.library import DEFAULT_THRESHOLDS
from fames.errors import FamesError
from fames.flow.library import cheapest_implementations, liberty_path, pdp_costs

SIGNEDNESS = {"unsigned": (False,), "signed": (True,), "both": (False, True)}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``fames: error: ... (see fames ... --help)``, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"fames: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _number(kind: type, low: float, strict: bool = False, high: float | None = None):  # type: ignore[no-untyped-def]
    """argparse type: a finite ``kind`` >= ``low`` (> ``low`` when ``strict``), and <= ``high`` when given."""

    def parse(text: str) -> int | float:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text} must be a finite number")
        if v < low or (strict and v == low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if strict else '>='} {low:g}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"{text} must be <= {high:g}")
        return v

    parse.__name__ = kind.__name__
    return parse


DATA_ROOT_HELP = "folder of --dataset (default: $FAMES_DATA, else ../shared/data)"
DATASET_HELP = "registered dataset (digits, cifar10) or imagefolder:PATH"
THREADS_HELP = "torch threads (default: $OMP_NUM_THREADS if set, else all cores; results depend on it, see the report)"
FORCE_HELP = "replace --out even if it is not a fames library (the folder and every file in it are replaced)"
EXTENDS = "library directory (created, or extended: designs of the same names replaced; written atomically)"
POSITIVE_INT, POSITIVE_FLOAT, NON_NEGATIVE = _number(int, 1), _number(float, 0, strict=True), _number(float, 0)
NON_NEGATIVE_INT = _number(int, 0)


# --------------------------------------------------------------------------- lib
def cmd_lib_build(args: argparse.Namespace) -> int:
    from fames.appmul.arith import structure
    from fames.appmul.families import build_family

    signs = (True,) if args.signed else SIGNEDNESS[args.signedness]
    made = []
    with structure(args.structure):
        for a_bits, w_bits in args.bits or [(8, 8)]:
            for s in signs:
                made.extend(build_family(args.family, a_bits, w_bits, s))
    _add_to_library(made, args.out, args.force)
    return 0


def _add_to_library(made: list, out: str, force: bool) -> None:
    """Add AppMuls to the library ``out`` (created when absent), replacing designs of the same names."""
    from fames.appmul.library import editing

    with editing(out, force) as lib:
        same = {m.name for m in made if m.name in lib and lib[m.name].same_function_and_netlist(m)}
        replaced = sum(m.name in lib for m in made) - len(same)
        for m in made:
            if m.name not in same:  # an identical design stays as it is, with the cost it may have been given
                lib.replace(m)
    notes = [f"{len(same)} already there, unchanged"] * bool(same) + [f"{replaced} replaced designs of the same "
                                                                      "names"] * bool(replaced)
    print(f"wrote {len(made) - len(same)} AppMuls to {out}" + (f" ({'; '.join(notes)})" if notes else "")
          + f"; it holds {len(lib)}")


def cmd_lib_import_evoapprox(args: argparse.Namespace) -> int:
    from fames.appmul.importers import import_evoapprox

    print("EvoApproxLib AppMuls with their published PDK45 costs:")
    _add_to_library(import_evoapprox(args.src), args.out, args.force)
    return 0


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its 4-D parameters and buffers (convolution kernels) in channels_last memory format, the fast
    layout on CPU; others (Conv1d/Conv3d kernels, vectors) stay as they are."""
    import torch

    for t in (*model.parameters(), *model.buffers()):
        if t.dim() == 4:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


def cmd_lib_import(args: argparse.Namespace) -> int:
    import concurrent.futures as cf

    import numpy as np

    from fames.appmul.importers import design_kind, import_design, read_text_lut
    from fames.appmul.library import editing

    if args.remap and not args.liberty:
        raise FamesError("--remap replaces a mapped netlist's cells by their functions: it needs --liberty L, the "
                         "liberty whose cells the netlist instantiates")

    if args.bits and len(args.bits) > 1:
        raise FamesError(f"--bits is given {len(args.bits)} times; one call imports files of one width, or of the "
                         "widths each file declares (leave --bits out)")
    a_bits, w_bits = args.bits[0] if args.bits else (None, None)
    if args.signed and args.signed_only:
        raise FamesError("--signed makes both operands two's complement, --signed-only one of them: give one")
    signed = {"a": (True, False), "w": (False, True)}[args.signed_only] if args.signed_only else args.signed or None
    luts = [f for f in args.files if design_kind(Path(f))[0] in ("text", "npy")]
    for opt in ("top", "ports", "liberty", "keep_structure"):
        if getattr(args, opt) and luts:
            raise FamesError(f"--{opt.replace('_', '-')} applies to Verilog/BLIF designs, but {luts[0]} is a LUT "
                             "file (by its suffix; a design is .v, .sv or .blif, optionally .gz)")

    def one(f: str):  # noqa: ANN202 - an AppMul
        p = Path(f)
        if f not in luts:
            return import_design(p, a_bits, w_bits, signed, top=args.top,
                                 ports=tuple(args.ports) if args.ports else None, liberty=args.liberty,
                                 remap=args.remap, keep_structure=args.keep_structure)
        return read_text_lut(p, a_bits=a_bits, w_bits=w_bits, signed=signed)

    failed: dict[str, str] = {}
    source: dict[str, str] = {}  # design name -> the file of this call that imported it
    # Yosys runs in a child process per design, so threads overlap the files
    with editing(args.out, args.force) as lib, cf.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as ex:
        futs = [ex.submit(one, f) for f in args.files]
        for f, fut in zip(args.files, futs, strict=True):
            try:
                m = fut.result()
            except FamesError as e:
                failed[f] = str(e)
                continue
            if m.name in lib and lib[m.name].same_function_and_netlist(m):  # the same design again: nothing to do
                print(f"unchanged {m.name} from {f}: the same design as "
                      + (source.get(m.name, f"the one {args.out} holds")))
                continue
            if m.name in source:
                failed[f] = (f"its design name {m.name!r} is that of {source[m.name]}, imported by this call, a "
                             "different design; rename one file (the name is the file's stem)")
                continue
            if m.name in lib and not args.replace:
                failed[f] = (f"{args.out} already holds a different design named {m.name!r}; pass --replace to "
                             "overwrite it, or rename the file (the name is the file's stem)")
                continue
            old = lib.get(m.name)
            if old is not None and old.widths == m.widths and m.a_bits == m.w_bits and not args.ports \
                    and np.array_equal(old.lut, m.lut.T) and not np.array_equal(old.lut, m.lut):
                failed[f] = (f"its table is the transpose of the design {m.name!r} it would replace: its operands "
                             "were read in the other order (the first input port is taken as the activation); "
                             "name them with --ports (e.g. --ports B A O for EvoApproxLib's netlists)")
                continue
            lib.replace(m)
            source[m.name] = f
            ports = m.provenance.get("ports")
            how = f"; activation {ports['activation']}, weight {ports['weight']}, product {ports['product']}" \
                if ports else ""
            print(f"imported {m.name} ({m.signature()}{how}) from {f}")
        if len(failed) == len(args.files):  # nothing to save
            raise FamesError("no design imported: " + "; ".join(failed.values()))
    for f, e in failed.items():
        print(f"skipped {f}: {e}", file=sys.stderr)
    if failed:
        print(f"imported {len(args.files) - len(failed)} of {len(args.files)} files into {args.out}; "
              f"{len(failed)} failed (above)", file=sys.stderr)
    return 1 if failed else 0


def cmd_lib_cost(args: argparse.Namespace) -> int:
    from fames.appmul.library import Library, editing, is_library
    from fames.hw.cost import cost_library
    from fames.hw.liberty import read_liberty
    from fames.io import check_replaceable

    lib = Library.load(args.dir)
    liberty = liberty_path(args.liberty)
    read_liberty(liberty)  # a malformed liberty fails before any synthesis
    check_replaceable(args.out or args.dir, is_library, args.force, "library")
    reference = None
    if args.reference:
        if args.reference not in lib:
            exact = [m.name for m in lib if m.is_exact()]
            raise FamesError(f"--reference {args.reference}: {args.dir} holds no design of that name; its exact ones: "
                             f"{exact or 'none (leave --reference out to take ours)'}")
        ref = lib[args.reference]

        def reference(a_bits: int, w_bits: int, a_signed: bool, w_signed: bool):  # noqa: ANN202, FBT001
            from fames.appmul.families import build

            return ref if ref.widths == (a_bits, w_bits, a_signed, w_signed) else build(
                "exact", a_bits, w_bits, a_signed, w_signed)

    failed: dict[str, str] = {}
    costed = cost_library(
        list(lib),
        liberty,
        reference=reference,
        failures=failed,
        activity=args.energy,
        input_nets=args.input_nets,
        output_load_ff=args.output_load,
        wire_load=args.wire_load,
        adder_cells=args.adder_cells,
        structure="keep" if args.keep_structure else "resynthesise",
        **({"stream": "toggle", "toggle_rate": args.toggle_rate} if args.toggle_rate is not None else {}),
        hold=args.hold,
        n_vectors=args.vectors,
        seed=args.seed,
        clock_ns=args.clock_ns,
    )
    done = {m.name: m for m in costed}
    # a design that failed stays in the library, without a cost (an old one would mix recipes or liberties)
    out = Library([done.get(m.name) or m.with_cost(None) for m in lib])
    if args.out and Path(args.out).resolve() != Path(args.dir).resolve():
        out.save(args.out, force=args.force)
    else:  # in place: what other commands changed in the library while this one costed stays
        with editing(args.dir) as now:
            for m in out:
                if m.name in now and now[m.name].same_function_and_netlist(m):
                    now.replace(m)
                elif m.name in now:
                    failed[m.name] = "changed by another command while it was being costed; cost it again"
    print(f"costed {len(costed)} of {len(out)} AppMuls with {liberty}"
          + (f" (relative figures against {args.reference})" if args.reference else "")
          + f"; saved to {args.out or args.dir}")
    for name, e in failed.items():
        print(f"not costed: {name} (kept in the library without a cost): {e}", file=sys.stderr)
    return 1 if failed else 0


def _operand_weights(spec: str, args: argparse.Namespace) -> np.ndarray:
    """Operand-pair counts ``(2^a, 2^w)`` of one layer (``CHECKPOINT:LAYER``) or of every layer of the widths; for
    ``--metric omse`` the layer's per-output counts ``(O, 2^a, 2^w)``."""
    import itertools

    import torch

    from fames.data import get_dataset, get_loader, held_out, subset
    from fames.quant.convert import qlayers
    from fames.quant.operands import operand_histograms
    from fames.train import check_fits, load_model

    ck, sep, layer = spec.rpartition(":")
    if not sep or layer.endswith(".pt"):
        ck, layer = spec, ""
    model = load_model(args.model, ck).eval()
    names = [n for n, m in qlayers(model) if m.widths[:2] == tuple(args.bits)]
    if layer:
        if layer not in names:
            raise FamesError(f"--operands: no {args.bits[0]}x{args.bits[1]}-bit layer {layer!r} in {ck}; "
                             f"layers: {[n for n, _ in qlayers(model)]}")
        names = [layer]
    elif args.metric == "omse":
        raise FamesError(f"--metric omse scores one layer's output error: name the layer, --operands {ck}:LAYER "
                         f"(layers of these widths: {names})")
    if not names:
        raise FamesError(f"--operands: {ck} has no {args.bits[0]}x{args.bits[1]}-bit layer")
    signed = {m.widths[2] for n, m in qlayers(model) if n in names}
    if signed != {args.signed}:
        raise FamesError(f"--operands: the layers' operands are {'signed' if True in signed else 'unsigned'}; "
                         f"{'drop' if args.signed else 'add'} --signed")
    meta = getattr(model, "checkpoint_meta", None) or {}
    dataset = args.dataset or meta.get("dataset") or "cifar10"  # the images the checkpoint was trained on
    data = get_dataset(dataset, "train", root=args.data_root)
    x0, y0 = data[0]
    check_fits(model, x0[None], torch.tensor([y0]))  # before counting on thousands of images
    record = meta.get("holdout")
    if record:  # never count on the images the checkpoint holds out for validation
        data = subset(data, held_out(record, len(data))[1])
    loader = get_loader(data, "train", 128, shuffle=False)
    x = torch.cat([b[0] for b in itertools.islice(loader, -(-args.operand_images // 128))])[: args.operand_images]
    return sum(operand_histograms(model, x, names, per_output=args.metric == "omse").values())


def cmd_lib_synth(args: argparse.Namespace) -> int:
    from fames.appmul.library import editing, is_library
    from fames.appmul.synth.library import SynthConfig, front_table, gate_costs, synthesize, weighted_config
    from fames.hw.verify import check_design
    from fames.io import atomic_write_text, check_replaceable

    a_bits, w_bits = args.bits
    check_replaceable(args.out, is_library, args.force, "library")  # now, not after the synthesis
    methods = ("lac", "cgp") if args.method == "both" else (args.method,)
    cfg = SynthConfig(a_bits, w_bits, args.signed, methods=methods, metric=args.metric, max_error=args.max_error,
                      thresholds=tuple(args.thresholds) if args.thresholds else None,
                      seeds=args.seeds, generations=args.generations, proxy=args.proxy, time_s=args.time_s,
                      designs=args.designs, family_starts=not args.no_family_starts, rounds=args.rounds)
    liberty = liberty_path(args.liberty) if args.liberty else None
    gc = gate_costs(liberty) if liberty else None
    weights = _operand_weights(args.operands, args) if args.operands else None
    fronts: dict[str, list] = {}
    appmuls = synthesize(cfg, weights, gc, args.workers, args.ray,
                         on_front=lambda every, front: fronts.update(designs=front_table(every),
                                                                     front=front_table(front)),
                         cost=pdp_costs(liberty, progress=True) if liberty else None)
    if liberty:  # a family function keeps the cheaper of its two circuits on this liberty
        appmuls = cheapest_implementations(appmuls, liberty)
    for m in appmuls:  # LUT == simulated Verilog == simulated mapped netlist, for every design written
        check_design(m, liberty)
    key = (a_bits, w_bits, args.signed, args.signed)
    with editing(args.out, args.force) as lib:  # this synthesis replaces an earlier one of these widths, only
        stale = [m.name for m in lib if m.widths == key and m.provenance.get("family") == "synth"]
        for name in stale:
            lib.remove(name)
        for m in appmuls:
            lib.replace(m)
    out = Path(args.out)
    sig = appmuls[0].signature() if appmuls else f"{a_bits}x{w_bits}{'s' if args.signed else 'u'}"
    cfg = weighted_config(cfg, weights)  # the thresholds (and omse's bound) the searches ran at
    atomic_write_text(out / f"front-{sig}.json", json.dumps({"config": {**vars(cfg), "methods": list(methods)},
                                                             "operands": args.operands, **fronts}, indent=1))
    _plot_front(fronts, [m.provenance for m in appmuls], cfg, out / f"front-{sig}.png")
    print(f"wrote {len(appmuls)} synthesized {a_bits}x{w_bits} AppMuls ({', '.join(methods)}; {cfg.metric} <= "
          f"{cfg.max_error:g}) to {out}" + (f" in place of the {len(stale)} of an earlier synthesis" if stale else "")
          + f" (it holds {len(lib)}), checked LUT == Verilog{' == mapped netlist' if liberty else ''}; Pareto plot "
          f"{out / f'front-{sig}.png'}")
    return 0


def _plot_front(fronts: dict[str, list], picked: list[dict], cfg: Any, path: Path) -> None:
    import matplotlib.figure

    fig = matplotlib.figure.Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for method, color in (("lac", "tab:blue"), ("cgp", "tab:orange")):
        pts = [(d["error"], d["cost"]) for d in fronts["designs"] if d["method"] == method]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=6, alpha=0.3, color=color, label=f"{method} (every design)")
    ax.step([d["error"] for d in fronts["front"]], [d["cost"] for d in fronts["front"]], where="post", color="k",
            lw=1, label="Pareto front")
    ax.scatter([p["error"] for p in picked], [p["proxy_cost"] for p in picked], marker="x", color="k",
               label="in the library")
    ax.set_xlabel(f"{cfg.metric}{' (%)' if cfg.metric in ('mred', 'er') else ''}")
    ax.set_ylabel("proxy cost: " + ("switching energy x depth" if cfg.proxy == "pdp" else "sum of gate areas"))
    ax.set_title(f"synthesized {cfg.a_bits}x{cfg.w_bits} {'signed' if cfg.signed else 'unsigned'}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def cmd_lib_show(args: argparse.Namespace) -> int:
    from fames.appmul.library import Library
    from fames.appmul.summary import appmul_row, format_table

    rows = [appmul_row(m) for m in Library.load(args.dir)]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
    return 0


def cmd_lib_plot(args: argparse.Namespace) -> int:
    import matplotlib.figure

    from fames.appmul.library import Library
    from fames.appmul.summary import appmul_row, plot_pdp_vs_mred

    formats = matplotlib.figure.Figure().canvas.get_supported_filetypes()
    suffix = Path(args.out).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise FamesError(f"--out {args.out}: unknown image format {suffix!r}; use one of {sorted(formats)}")
    if Path(args.out).is_dir():
        raise FamesError(f"--out {args.out} is a folder; give an image file name such as {args.out}/pdp.png")
    rows = [appmul_row(m) for m in Library.load(args.dir)]
    print(f"wrote {plot_pdp_vs_mred(rows, args.out)}")
    return 0


def cmd_hw_liberty(args: argparse.Namespace) -> int:
    from fames.hw.synthetic import liberty_text, write_synthetic_liberty
    from fames.io import check_replaceable

    ours = liberty_text().splitlines()[0]
    check_replaceable(args.out, lambda p: p.is_file() and p.read_text(errors="replace").startswith(ours), args.force,
                      "synthetic liberty")
    print(f"wrote {write_synthetic_liberty(args.out)}")
    return 0


# --------------------------------------------------------------------------- models
def _setup_torch(threads: int | None) -> None:
    import torch

    env = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(threads or (int(env) if env.isdigit() and int(env) > 0 else os.cpu_count() or 1))


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses
    import datetime as dt
    import time

    import torch

    from fames.data import dataset_hash, get_dataset, get_loader, held_out, holdout_record, list_datasets, subset
    from fames.flow.inputs import check_same_quantization
    from fames.io import content_hash
    from fames.models import save_checkpoint
    from fames.quant import load_config, qlayers
    from fames.train import Resume, TrainConfig, check_fits, command_line, evaluate, load_model, qat, train

    if Path(args.out).is_dir():
        raise FamesError(f"--out {args.out} is a folder; give a checkpoint file name such as {args.out}/model.pt")
    if Path(args.out).exists() and not args.force:  # found now, not after hours of training
        raise FamesError(f"--out {args.out} exists: training would replace it; choose another file, or pass --force")
    if args.manifest:
        _read_manifest(Path(args.manifest))  # likewise
    if ":" in args.dataset and args.dataset.partition(":")[0] not in (known := list_datasets()):
        raise FamesError(f"--dataset {args.dataset}: fames train takes a registered dataset ({', '.join(known)}) or "
                         "imagefolder:PATH; to train on a Dataset of your own, call fames.train.train or "
                         "fames.train.qat from Python (fames run and fames eval take package.module:factory)")
    _setup_torch(args.threads)
    torch.manual_seed(args.seed)
    ds_kw = {} if args.channels is None else {"channels": args.channels}  # (image folders)
    data = get_dataset(args.dataset, "train", root=args.data_root, augment=True, **ds_kw)
    n_classes = len(data.classes) if hasattr(data, "classes") else 10
    model = load_model(args.model, args.init, num_classes=None if args.init else n_classes)
    x0, y0 = data[0]
    check_fits(model, x0[None], torch.tensor([y0]))  # the images fit the model (channels, sizes)
    with torch.no_grad():
        outputs = model.eval()(x0[None]).shape[-1]
    if outputs != n_classes:
        raise FamesError(f"--init {args.init} gives a model of {outputs} outputs, but {args.dataset} has {n_classes} "
                         "classes: fames train does not replace a model's head; train from scratch (no --init) or "
                         f"on a dataset of {outputs} classes")
    model = channels_last(model)
    init_meta = getattr(model, "checkpoint_meta", None) or {}
    if init_meta.get("assignment"):
        raise FamesError(f"--init {args.init} is a run's result, calibrated with the AppMuls of "
                         f"{init_meta['assignment']}; give the checkpoint that run started from")
    quantized = getattr(model, "fames_quant_config", None) if qlayers(model) else None
    if quantized:  # more quantization-aware training of a quantized checkpoint, at its own widths
        check_same_quantization(model, args.bits)
        print(f"--init {args.init} is quantized already: training it further at its widths (no distillation: its "
              "float teacher is not in the checkpoint)", file=sys.stderr)
    inherited = init_meta.get("holdout")
    n_hold = args.holdout if args.holdout is not None else (int(inherited["n"]) if inherited else 0)
    if inherited and n_hold != int(inherited["n"]):
        raise FamesError(f"--init {args.init} was trained without {inherited['n']} held-out images; give --holdout "
                         f"{inherited['n']} (or none) so that the validation images stay unseen")
    holdout = holdout_record(len(data), n_hold) if n_hold else None
    if holdout and inherited and inherited.get("seen_by_init"):  # what the init's own init saw, carried on
        holdout["seen_by_init"] = inherited["seen_by_init"]
    if holdout and args.init and not inherited:  # e.g. --init default: weights trained on every training image
        holdout["seen_by_init"] = str(args.init)
        print(f"note: --init {args.init} records no held-out images, so it may have been trained on the {n_hold} held "
              "out now: they are recorded as possibly seen, and a run validating on them says so (train from scratch "
              "with --holdout for unseen validation images)", file=sys.stderr)
    if holdout:
        data = subset(data, held_out(holdout, len(data))[1])
        print(f"training on {len(data)} images; {n_hold} held out for validation")
    tl = get_loader(data, "train", args.batch_size, seed=args.seed, channels_last=True)
    # an interrupted run of the same command resumes from this file (what it depends on is its key)
    same = {k: v for k, v in vars(args).items() if k not in ("func", "threads", "force", "manifest", "debug")}
    train_hash = dataset_hash(args.dataset, "train", root=args.data_root, **ds_kw)
    inputs = [json.dumps(same, sort_keys=True, default=str), train_hash]
    inputs += [Path(f).read_bytes() for f in (args.init, args.bits) if f and Path(f).is_file()]  # their contents
    resume = Resume(Path(args.out).with_name(Path(args.out).name + ".partial"), content_hash(*inputs))
    cfg = TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        kd_alpha=args.kd if args.bits else 0.0,
        scale_lr_mult=args.scale_lr_mult,
    )
    t0 = time.time()
    if quantized:
        train(model, tl, dataclasses.replace(cfg, kd_alpha=0.0), resume=resume)
        quant = quantized
    elif args.bits:
        qcfg = load_config(args.bits)
        if args.act_qat:
            qcfg.act_qat = args.act_qat
            qcfg.__post_init__()
        qat(model, qcfg, tl, cfg, distill=args.kd > 0, resume=resume)
        quant = qcfg.to_dict()
    else:
        train(model, tl, cfg, resume=resume)
        quant = None
    seconds = time.time() - t0
    test = get_loader(args.dataset, "test", 500, root=args.data_root, channels_last=True, **ds_kw)
    acc = evaluate(model, test)
    meta = {
        "quant": quant,
        "num_classes": n_classes,
        "dataset": args.dataset,
        "data_hash": train_hash,
        "test_hash": dataset_hash(args.dataset, "test", root=args.data_root, **ds_kw),
        "accuracy": acc["accuracy"],
        "test_loss": acc["loss"],
        "command": command_line(),
        "date": dt.date.today().isoformat(),
        "train_seconds": round(seconds, 1),
        "epochs": args.epochs,
        "holdout": holdout,
    }
    save_checkpoint(model, args.out, arch=getattr(model, "arch", None) or args.model, meta=meta)
    resume.done()
    print(f"test accuracy {acc['accuracy']:.2f}% on {acc['n']} {args.dataset} test images; saved {args.out}")
    if args.manifest:
        _update_manifest(Path(args.manifest), Path(args.out), getattr(model, "arch", args.model), meta)
    return 0


def _read_manifest(manifest: Path) -> dict:
    """A checkpoint manifest (``{"checkpoints": {...}}``), a new one when the file does not exist yet."""
    from fames.io import read_json

    data = read_json(manifest, FamesError) if manifest.is_file() else {"checkpoints": {}}
    if not isinstance(data, dict) or not isinstance(data.get("checkpoints"), dict):
        raise FamesError(f"{manifest} is not a fames checkpoint manifest (a JSON object with \"checkpoints\"); give "
                         "another --manifest")
    return data


def _update_manifest(manifest: Path, ckpt: Path, arch: str, meta: dict) -> None:
    from fames.io import atomic_write_json

    data = _read_manifest(manifest)
    try:
        rel = str(ckpt.resolve().relative_to(manifest.parent.resolve()))
    except ValueError:
        rel = str(ckpt)
    data["checkpoints"][rel] = {"arch": arch, **meta}
    atomic_write_json(manifest, data)


def cmd_eval(args: argparse.Namespace) -> int:

    from fames.data import get_loader
    from fames.flow.saved import load_model
    from fames.flow.stats import wilson_interval
    from fames.quant import qlayers
    from fames.train import evaluate

    _setup_torch(args.threads)
    if args.checkpoint is None and args.model:
        print(f"note: no --checkpoint: {args.model!r} is evaluated with random initial weights", file=sys.stderr)
    run_meta: dict = {}
    if args.checkpoint is not None and args.model is None:  # a run's model.pt names its model and images
        from fames.models import load_checkpoint_file

        run_meta = load_checkpoint_file(args.checkpoint)[1]
        args.model = run_meta.get("run_model")
    model = load_model(args.checkpoint, args.model, exact=args.exact, library=args.library,
                       assignment=args.assignment)
    args.channels = args.channels or run_meta.get("run_channels")
    if (getattr(model, "checkpoint_meta", None) or {}).get("assignment") and not (args.assignment or args.exact) \
            and any(q.mode == "approx" for _, q in qlayers(model)):  # a run's model.pt, as it was reported
        print("note: with the AppMuls saved beside the checkpoint (its assignment and library/); --exact puts exact "
              "multipliers in their place", file=sys.stderr)
    model = channels_last(model)
    meta = getattr(model, "checkpoint_meta", None) or {}
    recorded = meta.get("dataset") or meta.get("run_dataset")  # trained on, or (a run's model.pt) run on
    args.dataset = args.dataset or recorded  # the images the checkpoint was trained on (a CIFAR-10 model took digits)
    if args.dataset is None:
        raise FamesError("--dataset is needed: the checkpoint does not record the dataset it was trained on (digits, "
                         "cifar10, imagefolder:PATH or package.module:factory)")
    if recorded and args.dataset != recorded:
        print(f"note: the checkpoint was trained on {recorded}; evaluating on {args.dataset}", file=sys.stderr)
    if args.eval_images is not None:  # the class-stratified subset a run report used (data.eval_images)
        from fames.flow.config import DataConfig
        from fames.flow.inputs import test_loader

        if args.split != "test":
            raise FamesError("--eval-images takes a class-stratified subset of the test split; drop --split")
        loader = test_loader(DataConfig(dataset=args.dataset, root=args.data_root, batch_size=args.batch_size,
                                        eval_images=args.eval_images, channels=args.channels))
        if (have := len(loader.dataset)) < args.eval_images:
            raise FamesError(f"--eval-images {args.eval_images}: the {args.dataset} test split holds {have} images; "
                             "give at most that many, or leave the option out for all")
    else:
        from fames.flow.config import DataConfig
        from fames.flow.inputs import dataset_split

        ds = dataset_split(DataConfig(dataset=args.dataset, root=args.data_root, channels=args.channels), args.split)
        loader = get_loader(ds, args.split, args.batch_size, channels_last=True)
    r = evaluate(model, loader, max_batches=args.max_batches)
    same = (meta.get("dataset") == args.dataset and args.split == "test" and args.max_batches is None
            and meta.get("eval_images") == args.eval_images and not args.assignment)
    ref = f" (manifest: {meta['accuracy']:.2f}% on the same images)" if same and "accuracy" in meta else ""
    lo, hi = wilson_interval(round(r["accuracy"] * r["n"] / 100), r["n"])
    print(f"accuracy {r['accuracy']:.2f}% [95%: {lo:.2f}-{hi:.2f}] loss {r['loss']:.4f} on {r['n']} {args.dataset} "
          f"{args.split} images{ref}")
    if args.json:
        print(json.dumps(r))
    return 0


# --------------------------------------------------------------------------- FAMES
def cmd_run(args: argparse.Namespace) -> int:
    from fames.flow.config import RunConfig
    from fames.flow.run import run

    cfg = RunConfig.from_file(args.config)
    _setup_torch(args.threads)
    if args.output:
        cfg.output = args.output
    if args.verbose:
        cfg.selection.solver_output = True
    r = run(cfg, force=args.force)
    if r.test:  # target mode: chosen on the validation split, measured once on the test data
        t, pd = r.test, r.test["paired_difference"]
        lo, hi = t["accuracy_ci95"]
        print(f"R = {r.best.budget:g}: energy reduction {100 * r.energy_reduction:.2f}%; test accuracy "
              f"{t['accuracy']:.2f}% [95%: {lo:.2f}-{hi:.2f}] on {t['images']} images (exact quantized "
              f"{t['exact_accuracy']:.2f}%, paired difference {pd['points']:+.2f} points, 95% interval "
              f"{pd['ci95'][0]:+.2f} to {pd['ci95'][1]:+.2f}); report: {Path(cfg.output) / 'report.md'}")
    else:
        beyond = "" if r.within_bound else f", BEYOND the {cfg.max_accuracy_loss:g}-point bound: no budget is within"
        b, chosen = r.best, len([x for x in r.rows if not x.infeasible]) > 1
        lo, hi = b.accuracy_ci95 or (float("nan"), float("nan"))
        print(
            f"energy reduction {100 * r.energy_reduction:.2f}% at accuracy {r.accuracy:.2f}% [95%: {lo:.2f}-{hi:.2f}]"
            f" on {len(r.exact_correct)} images (exact quantized {r.exact_accuracy:.2f}%{beyond})"
            + ("; the budget was chosen on these same images (optimistic: `budget: search` chooses on a validation "
               "split and tests once)" if chosen else "") + f"; report: {Path(cfg.output) / 'report.md'}"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fames.flow.demo import run_demo

    _setup_torch(args.threads)
    res = run_demo(args.out)
    print(Path(res["summary"]).read_text())
    print(f"demo report: {res['summary']} (per configuration: {args.out}/<config>/report.md and fig_*.png)")
    return 0


# --------------------------------------------------------------------------- parser
def _bits(values: list[str]) -> tuple[int, int]:
    return int(values[0]), int(values[1])


def build_parser() -> argparse.ArgumentParser:
    import dataclasses

    from fames.flow.config import RunConfig

    p = _Parser(
        prog="fames",
        description="Approximate multipliers for quantized neural networks: AppMul libraries with hardware cost, "
        "quantization and bit-exact emulation, FAMES selection and calibration. Start with `fames demo`.",
    )
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an internal error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    lib = sub.add_parser("lib", help="build, import, cost, show and plot AppMul libraries")
    ls = lib.add_subparsers(dest="lib_command", required=True, metavar="SUBCOMMAND")

    b = ls.add_parser(
        "build",
        help="generate a family of AppMuls (LUT + structural Verilog)",
        description="Python: fames.appmul.families.build_family(family, a_bits, w_bits, signed)",
    )
    b.add_argument("--family", default="all", help="family name or 'all' (see `fames lib families`); 'roup:full': "
                   "every (P, R) of ROUP instead of its default grid")
    b.add_argument(
        "--structure",
        default="textbook",
        choices=["textbook", "fast"],
        help="multiplier structure: textbook (Dadda tree + ripple-carry adder, as the literature's baselines) "
        "or fast (arrival-ordered tree + prefix adder)",
    )
    b.add_argument(
        "--bits",
        nargs=2,
        type=int,
        action="append",
        metavar=("A", "W"),
        help="activation and weight widths, 2..8; repeat for several (default 8 8)",
    )
    b.add_argument("--signed", action="store_true", help="two's-complement operands (same as --signedness signed)")
    b.add_argument("--signedness", choices=list(SIGNEDNESS), default="unsigned",
                   help="operand signedness of the designs (both: unsigned and signed ones in the same library)")
    b.add_argument("--out", required=True, help=EXTENDS)
    b.add_argument("--force", action="store_true", help=FORCE_HELP)
    b.set_defaults(func=cmd_lib_build)

    fam = ls.add_parser("families", help="list the generated families and their definitions")
    fam.set_defaults(func=cmd_lib_families)

    e = ls.add_parser(
        "import-evoapprox",
        help="import EvoApproxLib (table folder like ../shared/evoapproxlib, or a git checkout of C models)",
        description="Python: fames.appmul.importers.import_evoapprox(src)",
    )
    e.add_argument("--src", help="folder with index.csv + luts.npz, or an EvoApproxLib checkout (default: "
                   "../shared/evoapproxlib)")
    e.add_argument("--out", required=True, help=EXTENDS)
    e.add_argument("--force", action="store_true", help=FORCE_HELP)
    e.set_defaults(func=cmd_lib_import_evoapprox)

    im = ls.add_parser(
        "import",
        help="add designs to a library: LUTs (`a w product` lines, a matrix as np.savetxt or np.save writes it), "
        "Verilog (.v) or BLIF (.blif); many files "
        "at once, a failing file is reported and skipped (exit 1)",
        description="Python: fames.appmul.importers.read_text_lut / import_design",
    )
    im.add_argument("files", nargs="+", help="design files: .v/.sv Verilog, .blif BLIF, .npy a LUT matrix as np.save "
                    "writes it (rows: activation bit patterns), any other suffix a text LUT (`a w product` lines, or "
                    "that matrix as np.savetxt writes it)")
    im.add_argument("--bits", nargs=2, type=int, action="append", metavar=("A", "W"),
                    help="activation and weight widths (default: a Verilog/BLIF design's port widths; "
                    "text LUTs infer them from their values)")
    im.add_argument("--signed", action="store_true",
                    help="two's-complement operands and product (default: as the Verilog ports are declared, "
                    "`input signed [7:0] a`, else unsigned; `a w product` LUTs: an operand with negative values; a "
                    "LUT matrix with negative products: the signedness closest to an exact multiplier)")
    im.add_argument("--signed-only", choices=("a", "w"), help="only this operand is two's complement: a "
                    "(activation) or w (weight); the other is unsigned")
    im.add_argument("--top", help="top module of a Verilog design (default: the module named after the file, else "
                    "the one module no other module of the file instantiates)")
    im.add_argument(
        "--ports",
        nargs=3,
        default=None,
        metavar=("A", "W", "Y"),
        help="names of the activation, weight and product ports (default: ports a, w, y, else those of a module "
        "with two inputs and one output, the first input as the activation; EvoApproxLib's netlists, whose tables "
        "index B first: --ports B A O)",
    )
    im.add_argument("--liberty", help="the .lib(.gz) whose cells a mapped netlist instantiates: the cells are kept as "
                    "mapped, so `fames lib cost` with that liberty costs the netlist as it is")
    im.add_argument("--remap", action="store_true", help="with --liberty: replace the cells by their functions, "
                    "so the design is re-synthesised like any other (and can be costed with any liberty)")
    im.add_argument("--keep-structure", action="store_true", help="keep the design's gates as written (no logic "
                    "optimisation at import), for `fames lib cost --keep-structure`, which costs each netlist as it "
                    "stands")
    im.add_argument("--out", required=True, help="library directory (created or extended)")
    im.add_argument("--replace", action="store_true", help="overwrite designs of --out with the same names (default: "
                    "such a file is reported and skipped)")
    im.add_argument("--force", action="store_true", help=FORCE_HELP)
    im.set_defaults(func=cmd_lib_import)

    c = ls.add_parser(
        "cost",
        help="synthesize every AppMul with Yosys+ABC on a liberty; area, delay, energy/op, PDP (cached)",
        description="Python: fames.hw.cost.cost_library(appmuls, liberty)",
    )
    c.add_argument("dir", help="library directory (updated in place unless --out)")
    c.add_argument(
        "--liberty",
        required=True,
        help="liberty file (.lib or .lib.gz), or 'synthetic' for the project's own test library",
    )
    c.add_argument("--toggle-rate", type=_number(float, 0.0, strict=True, high=1.0), default=None, metavar="P",
                   help="operand bits flip with probability P between consecutive operations (correlated operands; "
                   "0.1 is the default of Synopsys' vector-free power analysis); default: independent uniform operands")
    c.add_argument("--hold", type=POSITIVE_INT, default=1, help="hold each weight for M operations (weight-stationary)")
    c.add_argument("--wire-load", choices=["none", "liberty"], default="none",
                   help="liberty: add the liberty's default wire-load capacitance to every net by its fanout, as "
                   "Design Compiler does before layout (NanGate names one; a liberty without one gets none)")
    c.add_argument("--adder-cells", action="store_true",
                   help="map full and half adders to the liberty's adder cells before ABC maps the rest (closer to "
                   "EvoApproxLib's own netlists, but larger and slower than ABC's gates; docs/results/hw_cost.md)")
    c.add_argument("--keep-structure", action="store_true",
                   help="cost each design as the gate netlist it is: its gates mapped without restructuring, with "
                   "the smallest cell of each function (default: re-synthesised by Yosys + ABC; how each ranks "
                   "published figures: docs/results/hw_cost.md)")
    c.add_argument("--vectors", type=_number(int, 2), default=4096, help="operand pairs simulated for energy")
    c.add_argument("--clock-ns", type=POSITIVE_FLOAT, default=1.0, help="clock period for power and leakage (ns)")
    c.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the operand stream")
    c.add_argument("--energy", choices=["zero-delay", "glitch", "propagated"], default="zero-delay",
                   help="toggle counts of a zero-delay simulation, of a timing-aware one with the cells' delays "
                   "(glitches included), or transition densities propagated from the inputs' activity (as Design "
                   "Compiler without an activity file)")
    c.add_argument("--input-nets", choices=["all", "pins", "none"], default="none",
                   help="how switching of primary-input nets counts (see fames.hw.energy.energy_per_op)")
    c.add_argument("--output-load", type=NON_NEGATIVE, default=0.0,
                   help="load on every product bit, fF (0 as Design Compiler without set_load; 3.9 models the adder "
                   "input it drives in a MAC)")
    c.add_argument("--reference", metavar="NAME",
                   help="take relative figures against this exact multiplier of the library (e.g. EvoApproxLib's own "
                   "exact netlist) for its widths, instead of ours; it becomes the energy baseline of those widths")
    c.add_argument("--out", help="write the costed library here instead of updating DIR")
    c.add_argument("--force", action="store_true", help=FORCE_HELP)
    c.set_defaults(func=cmd_lib_cost)

    sy = ls.add_parser(
        "synth",
        help="approximate logic synthesis of AppMuls (local approximate changes and/or Cartesian GP)",
        description="Python: fames.appmul.synth.library.synthesize(SynthConfig(...)). Starts from our exact "
        "multiplier, keeps every design on the Pareto front of error vs proxy cost (--proxy) and writes "
        "the library (LUT + structural Verilog, each checked against its Yosys simulation; added to --out, replacing "
        "an earlier synthesis of the same widths there), front-AxW.json and front-AxW.png. Final hardware figures: "
        "`fames lib cost DIR --liberty ...`.",
    )
    sy.add_argument("--bits", nargs=2, type=int, required=True, metavar=("A", "W"), help="operand widths, 2..8")
    sy.add_argument("--signed", action="store_true", help="two's-complement operands")
    sy.add_argument("--method", choices=["lac", "cgp", "both"], default="both",
                    help="local approximate changes (ALSRAC/SASIMI line), Cartesian genetic programming, or both")
    sy.add_argument("--metric", choices=list(METRICS), default="mred",
                    help="error metric bounded by --max-error (mred, mred0 and er in percent; mred0 also counts "
                    "errors on zero products, relative to one LSB: use it with --operands; omse: one layer's output "
                    "error per product in LSB^2, each channel's bias accumulated over its fan-in, needs --operands "
                    "CHECKPOINT:LAYER)")
    sy.add_argument("--max-error", type=POSITIVE_FLOAT, default=20.0,
                    help="largest error kept, in the unit of --metric (MRED: percent)")
    sy.add_argument("--thresholds", type=POSITIVE_FLOAT, nargs="+", help="error bounds of the CGP runs (default "
                    f"{' '.join(f'{t:g}' for t in DEFAULT_THRESHOLDS)} times --max-error / 20, and --max-error)")
    sy.add_argument("--seeds", type=POSITIVE_INT, default=2, help="CGP runs per threshold")
    sy.add_argument("--generations", type=POSITIVE_INT, default=20000, help="generations per CGP run")
    sy.add_argument("--rounds", type=POSITIVE_INT, default=1, help="search rounds: each further round restarts "
                    "CGP at every threshold from the cheapest design found so far within it (helps at 8x8)")
    sy.add_argument("--time-s", type=POSITIVE_FLOAT, default=None,
                    help="wall-clock cap per job (results then depend on the machine's load)")
    sy.add_argument("--designs", type=POSITIVE_INT, default=24, help="designs kept, spread over the error axis")
    sy.add_argument("--no-family-starts", action="store_true",
                    help="start every search from the exact multiplier only (default: CGP also improves the "
                    "families' Pareto-best designs, which stay points of the front: one that nothing beats is "
                    "written too, named synth_..._seed_..., its provenance naming the family design)")
    sy.add_argument("--proxy", choices=["pdp", "area"], default="pdp",
                    help="inner-loop cost: switching energy x logic depth (pdp) or the sum of gate areas")
    sy.add_argument("--liberty", help="gate costs from this liberty's smallest cells, and the front chosen on PDP "
                    "by the cost engine on it (default: NAND2 equivalents, front on the proxy)")
    sy.add_argument("--operands", metavar="CHECKPOINT[:LAYER]",
                    help="weight the error by the operand pairs of a quantized model (all layers of these widths, "
                    "or one layer)")
    sy.add_argument("--model", default=None, help="architecture of --operands when the checkpoint does not say (zoo "
                    "name or package.module:factory)")
    sy.add_argument("--dataset", help="images for the activation codes of --operands (default: the dataset the "
                    "checkpoint was trained on, else cifar10)")
    sy.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    sy.add_argument("--operand-images", type=POSITIVE_INT, default=256,
                    help="training images the activation codes of --operands are counted on")
    sy.add_argument("--workers", type=POSITIVE_INT, default=None, help="local processes (default: CPU count)")
    sy.add_argument("--ray", metavar="ADDRESS", default=None,
                    help="run the jobs on Ray: 'auto' (a cluster started by `ray start --head`), 'local' or host:port")
    sy.add_argument("--out", required=True, help="library directory (created, or extended: an earlier synthesis of "
                    "the same widths there is replaced; written atomically)")
    sy.add_argument("--force", action="store_true", help=FORCE_HELP)
    sy.set_defaults(func=cmd_lib_synth)

    s = ls.add_parser("show", help="one row per AppMul: bits, MRED, WCE, area, delay, energy/op, PDP")
    s.add_argument("dir", help="library directory")
    s.add_argument("--json", action="store_true", help="print the rows (errors and costs of every AppMul) as JSON")
    s.set_defaults(func=cmd_lib_show)

    pl = ls.add_parser("plot", help="PDP (relative to exact) vs MRED with the Pareto front marked")
    pl.add_argument("dir", help="library directory")
    pl.add_argument("--out", required=True, help="image file (.png, .pdf, .svg)")
    pl.set_defaults(func=cmd_lib_plot)

    tr = sub.add_parser(
        "train",
        help="fine-tune a float model, or quantization-aware training (LSQ or PACT, + distillation) at given bits",
        description="Python: fames.train.train / fames.train.qat",
    )
    tr.add_argument("--model", required=True,
                    help="zoo architecture (fames.models.list_models()) or package.module:factory")
    tr.add_argument("--init", default=None, help="initial weights: 'default' (zoo), a .pt checkpoint or a path")
    tr.add_argument("--dataset", required=True, help=DATASET_HELP)
    tr.add_argument("--channels", type=int, choices=(1, 3), default=None,
                    help="an imagefolder's images as 3 (RGB, default) or 1 (grayscale) channels")
    tr.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    tr.add_argument("--bits", default=None, help="QAT: 'W4A4' or a JSON/YAML quantization config; omit for float")
    tr.add_argument(
        "--act-qat",
        choices=["lsq", "pact"],
        default=None,
        help="QAT of activation ranges: lsq (learned step size, default) or pact (learned clipping bounds)",
    )
    tr.add_argument("--epochs", type=POSITIVE_FLOAT, default=1.0,
                    help="passes over the training images (fractions allowed)")
    tr.add_argument("--lr", type=POSITIVE_FLOAT, default=0.01, help="peak learning rate (SGD, cosine schedule)")
    tr.add_argument("--weight-decay", type=NON_NEGATIVE, default=5e-4, help="L2 weight decay")
    tr.add_argument("--kd", type=NON_NEGATIVE, default=0.5, help="distillation weight from the float model (QAT only)")
    tr.add_argument("--scale-lr-mult", type=POSITIVE_FLOAT, default=1.0, help="lr multiplier of quantizer step sizes")
    tr.add_argument("--batch-size", type=POSITIVE_INT, default=128, help="training images per step")
    tr.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of initialisation and data order")
    tr.add_argument("--holdout", type=NON_NEGATIVE_INT, default=None, metavar="N",
                    help="never train on a fixed random N of the training images (recorded in the checkpoint; "
                    "`fames run` in target mode then validates on them). Default: the --init checkpoint's, else 0")
    tr.add_argument("--threads", type=POSITIVE_INT, default=None, help=THREADS_HELP)
    tr.add_argument("--out", required=True, help="checkpoint file (.pt)")
    tr.add_argument("--force", action="store_true", help="replace --out if it exists")
    tr.add_argument("--manifest", default=None, help="manifest JSON to add this checkpoint to")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval",
        help="accuracy of a model/checkpoint, optionally with AppMuls substituted",
        description="Python: fames.train.load_model + fames.train.evaluate",
    )
    ev.add_argument("--model", default=None, help="zoo architecture or package.module:factory (needed unless "
                    "--checkpoint is a fames .pt of a zoo model)")
    ev.add_argument("--checkpoint", default=None, help="a .pt checkpoint, 'default' or a weights path")
    ev.add_argument("--dataset", default=None, help=DATASET_HELP + ", or package.module:factory (default: the one the "
                    "checkpoint records)")
    ev.add_argument("--channels", type=int, choices=(1, 3), default=None,
                    help="an imagefolder's images as 3 (RGB, default) or 1 (grayscale) channels")
    ev.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    ev.add_argument("--split", default="test", help="dataset split to evaluate (test or train)")
    ev.add_argument("--exact", action="store_true",
                    help="a run's model.pt on exact multipliers instead of the AppMuls it was saved with (its "
                    "calibrated parameters stay; default: with its AppMuls, as the run reported it)")
    ev.add_argument("--assignment", default=None, help="assignment JSON (layer -> AppMul name)")
    ev.add_argument("--library", default=None, help="AppMul library directory for --assignment")
    ev.add_argument("--batch-size", type=POSITIVE_INT, default=500, help="images per forward pass")
    ev.add_argument("--max-batches", type=POSITIVE_INT, default=None, help="stop after this many batches")
    ev.add_argument("--eval-images", type=POSITIVE_INT, default=None,
                    help="evaluate the class-stratified test subset of this size (what a run's data.eval_images used)")
    ev.add_argument("--threads", type=POSITIVE_INT, default=None, help=THREADS_HELP)
    ev.add_argument("--json", action="store_true", help="also print accuracy, loss and count as JSON")
    ev.set_defaults(func=cmd_eval)

    rn = sub.add_parser(
        "run",
        help="FAMES end to end from a YAML config: estimate, ILP selection, calibration, report",
        description="Python: fames.run(fames.RunConfig(...)) or fames.approximate_(model, data, library, "
        "fames.FamesConfig(...)). Keys (each documented in fames.RunConfig and the README; examples/*.yaml): "
        + ", ".join(sorted(f.name for f in dataclasses.fields(RunConfig))) + ".",
    )
    rn.add_argument("config", help="YAML run configuration")
    rn.add_argument("--output", default=None, help="override the config's output directory")
    rn.add_argument("--threads", type=POSITIVE_INT, default=None, help=THREADS_HELP)
    rn.add_argument("--force", action="store_true", help="write into an output folder that holds other files")
    rn.add_argument("--verbose", action="store_true", help="show the ILP solver's (HiGHS) log")
    rn.set_defaults(func=cmd_run)

    dm = sub.add_parser(
        "demo",
        help="the whole flow on embedded digits data (about half a minute on 2 cores, no files needed)",
        description="Python: fames.flow.demo.run_demo(out)",
    )
    dm.add_argument("--out", default="fames-demo", help="folder for summary.md and the per-configuration reports")
    dm.add_argument("--threads", type=POSITIVE_INT, default=None, help=THREADS_HELP)
    dm.set_defaults(func=cmd_demo)

    hw = sub.add_parser("hw", help="hardware helpers")
    hs = hw.add_subparsers(dest="hw_command", required=True, metavar="SUBCOMMAND")
    wl = hs.add_parser("write-liberty", help="write the project's small synthetic liberty (for tests and demos)")
    wl.add_argument("--out", required=True, help="liberty file to write (.lib)")
    wl.add_argument("--force", action="store_true", help="replace --out even if fames did not write it")
    wl.set_defaults(func=cmd_hw_liberty)
    return p


def cmd_lib_families(args: argparse.Namespace) -> int:
    from fames.appmul.families import FAMILIES

    for name, f in FAMILIES.items():
        print(f"{name:10s} {f.definition}  (parameters: {', '.join(f.params)})")
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """fames' own warnings as ``fames: warning: ...`` (others as Python prints them)."""
    if issubclass(category, UserWarning) and f"{os.sep}fames{os.sep}" in filename:
        print("fames: warning: " + " ".join(str(message).split()), file=sys.stderr)
    else:
        (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; exit status 0 ok, 2 user error, 1 internal error, 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    if argv is None:  # the console program (tests pass argv and keep Python's warning machinery)
        warnings.showwarning = _one_line_warning
        if not sys.stderr.isatty():  # a log file: a progress line every 30 s, not hundreds of KB of redrawn bars
            os.environ.setdefault("TQDM_MININTERVAL", "30")
    try:
        return args.func(args)
    except (FamesError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        print("fames: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nfames: interrupted; rerun the same command to resume", file=sys.stderr)  # off a progress bar's line
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - an internal error: one line, the traceback kept in a file
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # the machine's, not ours
            where = f" writing {e.filename}" if e.filename else ""  # (no file is left half-written: writes are atomic)
            print(f"fames: error: {e.strerror}{where}: free some space (or choose another output folder, or "
                  "FAMES_CACHE for the cache) and rerun the same command to resume", file=sys.stderr)
            return 2
        if args.debug:
            raise
        import tempfile
        import traceback

        fd, path = tempfile.mkstemp(prefix="fames-traceback-", suffix=".txt")
        with open(fd, "w") as fh:
            fh.write(f"fames {' '.join(sys.argv[1:] if argv is None else argv)}\n\n{traceback.format_exc()}")
        print(f"fames: internal error: {type(e).__name__}: {e} (traceback in {path}; rerun with --debug to see it "
              "here, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
