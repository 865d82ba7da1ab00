"""The mmcl-lab command: pretrain the backbone, run a preset, resume a run, print a report, compare methods."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

from .config import ConfigError


def _overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"override {pair!r} must look like section.key=value")
        out[key] = value
    return out


def _existing_run(run_dir: str | Path):
    """The run in run_dir, or FileNotFoundError when the folder holds none."""
    from .run import Run

    run = Run(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
    return run


def report(run_dir: str | Path, latex: str | Path | None = None) -> str:
    """The results of a run as Markdown: the accuracy matrix per setting, the summary metrics (ZSCL's Transfer / Avg
    / Last among them) and retrieval after the last task; latex, if given, is a file for the summary as LaTeX."""
    from .metrics import accuracy_matrix, summary

    run = _existing_run(run_dir)
    results = run.results()
    if results.empty:
        return f"{run_dir}: no results yet"
    lines = [f"# {run_dir}", ""]
    for setting in sorted(results.setting.unique()):
        R, init = accuracy_matrix(results, setting)
        lines += [f"## accuracy R[step, task], modality {setting}", ""]
        tasks = results[results.step == -1].drop_duplicates("task").sort_values("task")
        header = "| step | " + " | ".join(f"{t}:{m}" for t, m in zip(tasks.task, tasks.modality)) + " |"
        lines += [header, "|" + "---|" * (len(tasks) + 1)]
        lines += ["| init | " + " | ".join(f"{v:.3f}" for v in init) + " |"]
        lines += [f"| {i} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for i, row in enumerate(R)]
        lines.append("")
    table = summary(results)
    lines += ["## summary (zscl_*: ZSCL's Transfer / Avg / Last)", "", table.to_markdown(index=False, floatfmt=".3f"),
              ""]
    found = run.retrieval()
    if len(found):
        from .retrieval import wide

        last = found[found.step == found.step.max()]
        lines += [f"## retrieval after task {int(last.step.max())} (tasks trained so far)", "",
                  wide(last, ["setting", "modality"]).reset_index().to_markdown(index=False, floatfmt=".3f"), ""]
    lines += fingerprint_lines(run.provenance().get("fingerprints"))
    if latex is not None:
        from .latex import booktabs, number
        from .utils import atomic_write_text

        metrics = [c for c in table.columns if c not in ("setting", "modality")]
        cells = table[["setting", "modality"]].assign(**{m: [number(v) for v in table[m]] for m in metrics})
        atomic_write_text(Path(latex), booktabs(cells.rename(columns=lambda c: c.replace("_", " ")), None,
                                                caption=f"{run.config().method.name}: metrics per setting and "
                                                        "modality (one run)", label="tab:run",
                                                sources=[str(run.path / "results.csv")]))
    return "\n".join(lines)


def fingerprint_lines(prints: dict | None) -> list[str]:
    """The run's fingerprints (provenance.json) as a Markdown table: compare them to tell whether two machines held
    the same bits. BLAS and the thread count change the last bits of features and weights, and so their checksums."""
    if not prints:
        return []
    rows = [{"what": f"{m} {part}", "checksum": value} for part, per_modality in
            (("stream", prints.get("stream", {})), ("corpus", prints.get("backbone", {}).get("corpus", {})))
            for m, values in per_modality.items() for value in [" ".join(f"{k} {v}" for k, v in values.items())]]
    rows.append({"what": "backbone weights", "checksum": prints.get("backbone", {}).get("weights", "")})
    import pandas as pd

    return ["## fingerprints (provenance.json; BLAS and the thread count change features and weights)", "",
            pd.DataFrame(rows).to_markdown(index=False), ""]


def pretrain_report(cfg) -> str:
    """Build the stream and its backbone (cached), then the backbone's zero-shot table as Markdown."""
    import pandas as pd

    from .backbones import build_backbone
    from .evaluate import zero_shot_table
    from .streams import build_stream
    from .utils import resolve_device

    start, device = time.perf_counter(), resolve_device(cfg.train.device)
    stream = build_stream(cfg, device=device)
    backbone = build_backbone(cfg, stream, device)
    ready = time.perf_counter() - start
    model = backbone.model(stream).to(device)
    table = pd.DataFrame(zero_shot_table(model, stream, device, cfg.train.eval_batch_size))
    return "\n".join([
        backbone.describe() + (f", shift {cfg.pretrain.shift}" if cfg.model.backbone == "binding" else ""),
        f"data, features and backbone ready in {ready:.1f} s", "",
        "## zero-shot accuracy on the stream's test data (untouched backbone)", "",
        table.to_markdown(index=False, floatfmt=".3f")])


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), like every other failure of the command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog.split()[0]} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the mmcl-lab console script."""
    parser = _Parser(prog="mmcl-lab", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first, so that the encoders, backbones, datasets and methods it "
                             "registers can be named (repeatable; installed packages can use the "
                             "'mmcl_lab.plugins' entry point group instead)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_pre = sub.add_parser("pretrain", help="build (or read from the cache) the pretrained backbone and print "
                                            "its zero-shot accuracy on the stream")
    p_pre.add_argument("--preset", default="default", help="ci | default | paper, or a config.yaml path")
    p_pre.add_argument("overrides", nargs="*", help="dotted overrides, e.g. pretrain.shift=1.5")
    p_run = sub.add_parser("run", help="train a preset on its task stream and write a run directory")
    p_run.add_argument("--preset", default="default", help="ci | default | paper, or a config.yaml path")
    p_run.add_argument("--out", default=None, help="run directory (default: the config's out_dir)")
    p_run.add_argument("--overwrite", action="store_true", help="replace a run with another config in --out (say a "
                                                               "diverged one); without it such a run is refused")
    p_run.add_argument("--tuned", action="store_true", help="start from the method's shipped validation-tuned "
                                                           "settings (mmcl_lab/tuned.yaml); overrides still win")
    p_run.add_argument("overrides", nargs="*", help="dotted overrides, e.g. method.name=comm train.epochs=3")
    p_resume = sub.add_parser("resume", help="continue a run after its newest complete checkpoint")
    p_resume.add_argument("run_dir")
    p_report = sub.add_parser("report", help="print a run's accuracy matrices and metrics")
    p_report.add_argument("run_dir")
    p_report.add_argument("--latex", default=None, help="also write the summary as a LaTeX (booktabs) table here")
    p_cmp = sub.add_parser("compare", help="several methods x seeds on one stream -> CSV + Markdown table")
    p_cmp.add_argument("--preset", default="default")
    p_cmp.add_argument("--methods", default="all", help="comma-separated names, or 'all'")
    p_cmp.add_argument("--seeds", default="0,1,2,3,4")
    p_cmp.add_argument("--ablation", action="store_true", help="also run COMM with each component off")
    p_cmp.add_argument("--memory", action="store_true", help="also sweep kept memory: ER buffer sizes, COMM's and "
                                                               "SLCA's covariance forms")
    p_cmp.add_argument("--untuned", action="store_true", help="use the preset's settings, not the shipped "
                                                                  "validation-tuned ones (mmcl_lab/tuned.yaml)")
    p_cmp.add_argument("--vary", default="split,backbone",
                       help="what each seed varies besides the run's own randomness: split (data.vary_split), backbone "
                            "(pretrain.seed + seed), both (the default), or none")
    p_cmp.add_argument("--out", default="runs/compare")
    p_cmp.add_argument("overrides", nargs="*")
    p_fig = sub.add_parser("figures", help="write a run's standard figures as files (PDF, SVG or PNG)")
    p_fig.add_argument("run_dir")
    p_fig.add_argument("--out", default=None, help="folder for the files (default: <run_dir>/figures)")
    p_fig.add_argument("--formats", default="pdf,svg", help="comma-separated: pdf, svg, png")
    p_gal = sub.add_parser("gallery", help="execute every notebook and write standalone HTML pages with an index")
    p_gal.add_argument("--preset", default="ci")
    p_gal.add_argument("--out", default="gallery")
    p_tune = sub.add_parser("tune", help="search each method's space on validation data with Optuna, equal budgets")
    p_tune.add_argument("--preset", default="default")
    p_tune.add_argument("--methods", default="comm,finetune,joint,ewc,lwf,er,l2p,zscl,slca")
    # the defaults are the search docs/TUNING.md reports (scripts/results.sh spells them out)
    p_tune.add_argument("--trials", "--budget", dest="trials", type=int, default=12,
                        help="configurations per method, the preset's own first")
    p_tune.add_argument("--extra", type=int, default=4,
                        help="configurations per widening round, when a winner sits at an edge")
    p_tune.add_argument("--rounds", type=int, default=2, help="widening rounds at the most")
    p_tune.add_argument("--seeds", default="0,1", help="every configuration is scored on each (mean)")
    p_tune.add_argument("--vary", default="split,backbone", help="what each seed varies, as for compare")
    p_tune.add_argument("--out", default="runs/tune")
    p_tune.add_argument("overrides", nargs="*")
    # Overrides may come before or after options: argparse leaves those after an option as extras.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        from .registry import load_plugins
        from .utils import init_distributed

        load_plugins(args.imports)
        init_distributed()  # under torchrun: one process per device, data-parallel
        return _dispatch(args)
    except KeyboardInterrupt:
        print("mmcl-lab: interrupted; finished tasks are checkpointed, `mmcl-lab resume` continues", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        if _known(err):
            print(f"mmcl-lab: error: {_one_line(err)}", file=sys.stderr)
            return 2
        print(f"mmcl-lab: unexpected {type(err).__name__}: {_one_line(err)} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


def _known(err: Exception) -> bool:
    """A failure with a one-line cause and fix: config, data, cache, checkpoint, disk, permissions, divergence."""
    train = sys.modules.get("mmcl_lab.train")  # imported by then if training could have diverged
    diverged = (train.TrainingDiverged,) if train else ()
    return isinstance(err, (ConfigError, KeyError, ValueError, OSError, *diverged))


def _one_line(err: BaseException) -> str:
    """An error as one line that names what it is about: the file of an OSError, the key of a KeyError."""
    if isinstance(err, OSError) and err.filename is not None:
        reason = err.strerror or str(err)
        hint = {errno.ENOSPC: "; free some space, then `mmcl-lab resume` continues",
                errno.EACCES: "; check the folder's permissions", errno.EROFS: "; the file system is read-only"}
        text = f"{err.filename}: {reason}{hint.get(err.errno, '')}"
    elif isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def _dispatch(args) -> int:
    from .backbones import build_backbone
    from .config import load_config
    from .run import preflight, resume, run_stream
    from .streams import build_stream
    from .timing import phase, phase_summary, phase_times
    from .utils import dist_info, resolve_device

    say = print if dist_info()[0] == 0 else (lambda *a, **k: None)
    if args.command == "pretrain":
        say(pretrain_report(load_config(args.preset, _overrides(args.overrides))))
    elif args.command == "run":
        cfg = load_config(args.preset, _overrides(args.overrides), tuned=args.tuned)
        preflight(cfg, args.out or cfg.out_dir, args.overwrite)  # fail before minutes of data preparation
        start, device = time.perf_counter(), resolve_device(cfg.train.device)
        stream = build_stream(cfg, device=device)
        backbone = build_backbone(cfg, stream, device)
        say(f"data, features and pretrained backbone ready in {time.perf_counter() - start:.1f} s "
            "(cached after the first run)")
        start = time.perf_counter()
        run = run_stream(cfg, args.out, stream, overwrite=args.overwrite, backbone=backbone)
        say(f"trained {len(stream)} tasks with {cfg.method.name} in {time.perf_counter() - start:.1f} s")
        with phase("report"):
            say(report(run.path))
        say(f"run directory: {run.path}")
        say(f"time by phase: {phase_summary(phase_times())}")
        if os.environ.get("MMCL_PHASES"):  # benchmarks/first_run.py reads them
            Path(os.environ["MMCL_PHASES"]).write_text(json.dumps(phase_times()))
    elif args.command == "resume":
        run = resume(args.run_dir)
        say(report(run.path))
    elif args.command == "report":
        say(report(args.run_dir, args.latex))
    elif args.command == "figures":
        from .viz import write_figures
        run = _existing_run(args.run_dir)
        paths = write_figures(run, args.out or run.path / "figures", tuple(args.formats.split(",")))
        say(f"{len(paths)} figure files written to {paths[0].parent}:\n" + "\n".join(p.name for p in paths))
    elif args.command == "compare":
        from .compare import MEMORY_VARIANTS, compare
        cfg = load_config(args.preset, _overrides(args.overrides))
        methods = None if args.methods == "all" else args.methods.split(",")
        table = compare(cfg, methods, _seeds(args.seeds), args.out, args.ablation, tuned=not args.untuned,
                        extra=MEMORY_VARIANTS if args.memory else None, vary=_vary(args.vary))
        say(table)
    elif args.command == "gallery":
        from .gallery import gallery
        say(f"gallery written: {gallery(args.out, args.preset)}")
    elif args.command == "tune":
        from .tune import tune
        cfg = load_config(args.preset, _overrides(args.overrides))
        table = tune(cfg, args.methods.split(","), args.trials, args.out, tuple(_seeds(args.seeds)), args.extra,
                     args.rounds, _vary(args.vary))
        say(table.to_markdown(index=False, floatfmt=".4g"))
        say(f"winners written to {args.out}/tuned.yaml; every configuration in {args.out}/search.csv")
    return 0


def _vary(text: str) -> tuple[str, ...]:
    """--vary "split,backbone" as a tuple ("none": nothing beyond the run seed)."""
    return () if text == "none" else tuple(v.strip() for v in text.split(",") if v.strip())


def _seeds(text: str) -> list[int]:
    """--seeds "0,1,2" as integers, or a ConfigError naming the option."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers such as 0,1,2, got {text!r}") from None


if __name__ == "__main__":
    sys.exit(main())
