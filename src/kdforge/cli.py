"""`kdforge` command line: parse, call the Python API, turn input errors into one line and exit code 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from kdforge.errors import KdforgeError

EXIT_INPUT_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdforge", description="Knowledge distillation experiments.")
    p.add_argument("--debug", action="store_true", help="show tracebacks of input errors")
    sub = p.add_subparsers(dest="command", required=True)

    def experiment(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config", type=Path, help="experiment YAML file")
        sp.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. train.epochs=5")
        sp.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
        sp.add_argument("--overwrite", action="store_true", help="discard the run folder's earlier checkpoints")
        return sp

    train = experiment("train", "train the student alone (method ce), or the teacher with --teacher")
    train.add_argument("--teacher", action="store_true", help="train and save the teacher from teacher.recipe")
    experiment("distill", "distill the teacher into the student with the config's method")
    ev = sub.add_parser("eval", help="evaluate a saved model folder (or a run folder) on a data set")
    ev.add_argument("checkpoint", type=Path)
    ev.add_argument("--data", required=True, help="data set name, e.g. fashion_mnist")
    ev.add_argument("--root", default=None, help="data folder (default $KDFORGE_DATA or ../shared/data)")
    ev.add_argument("--split", choices=["val", "test"], default="test")
    cmp_ = sub.add_parser("compare", help="run several methods over several seeds; table + plot")
    cmp_.add_argument("config", type=Path)
    cmp_.add_argument("overrides", nargs="*")
    cmp_.add_argument("--seeds", type=int, default=3)
    cmp_.add_argument("--methods", default="ce,kd,wsl", help="comma-separated registered method names")
    cmp_.add_argument("--out", type=Path, default=None, help="output folder (default runs/<name>)")
    cmp_.add_argument("--resume", action="store_true", help="continue the runs of an earlier comparison")
    cmp_.add_argument("--overwrite", action="store_true", help="replace the runs of an earlier comparison")
    cache = sub.add_parser("cache", help="teacher-output cache: build one for a config, or describe one")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    cb = cache_sub.add_parser("build", help="record the teacher's outputs for CONFIG (teacher.cache settings)")
    cb.add_argument("config", type=Path)
    cb.add_argument("overrides", nargs="*")
    cb.add_argument("--rebuild", action="store_true", help="build again even when a matching cache exists")
    ci = cache_sub.add_parser("info", help="what a cache folder holds; --verify checks every shard's sha256")
    ci.add_argument("path", type=Path)
    ci.add_argument("--verify", action="store_true")
    _analyze_parser(sub)
    rep = sub.add_parser("report", help="one self-contained HTML page of run, comparison and analysis folders")
    rep.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    rep.add_argument("--out", type=Path, default=Path("report.html"), help="the HTML file to write")
    rep.add_argument("--title", default="kdforge report")
    se = sub.add_parser("search", help="KD-Zero distiller search (or `search report CONFIG`) on an Optuna storage")
    se.add_argument("config", nargs="+", help="search YAML and key=value overrides; `report CONFIG` lists the best "
                                              "programs, their fitness curves and a plot of fitness over generations")
    se.add_argument("--workers", type=int, default=1, help="worker processes started here")
    se.add_argument("--storage", default=None, help="Optuna storage URL to join (default sqlite:///<out>/search.db)")
    se.add_argument("--top", type=int, default=10, help="report: how many programs to list")
    se.set_defaults(overrides=[])
    demo = sub.add_parser("demo", help="teacher, student alone, KD and WSL on scikit-learn digits, 3 seeds")
    demo.add_argument("--seeds", type=int, default=3)
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("overrides", nargs="*")
    _results_parser(sub)
    return p


def _results_parser(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser("reproduce", help="run a results plan (every row x seed, resumable) into results/<key>.jsonl")
    rp.add_argument("plan", type=Path, help="plan file, e.g. results/plans/cifar10_cpu.yaml")
    rp.add_argument("overrides", nargs="*", help="key=value overrides added to every row")
    rp.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (default: 1)")
    rp.add_argument("--threads", type=int, default=None,
                    help="torch threads per run (default: cores // jobs); recorded, as numbers can depend on it")
    rp.add_argument("--only", default=None, help="comma-separated row labels to run (the others are kept)")
    rp.add_argument("--sliver", action="store_true", help="the plan's sliver: first seed, tiny settings (CI)")
    rp.add_argument("--results-dir", type=Path, default=Path("results"), help="where <key>.jsonl goes")
    rp.add_argument("--runs-dir", type=Path, default=Path("runs/results"), help="where the run folders go")
    rp.add_argument("--teacher-store", type=Path, default=None,
                    help="where teachers are trained and reused (default: each config's teacher.store_dir)")
    rs = sub.add_parser("results", help="tables and figures generated from results/<key>.jsonl")
    rs_sub = rs.add_subparsers(dest="results_command", required=True)
    tb = rs_sub.add_parser("table", help="print a plan's table (Markdown, paired differences)")
    tb.add_argument("plan", help="plan key (results/plans/<key>.yaml) or plan file")
    fg = rs_sub.add_parser("figure", help="write a plan's dot plot with intervals")
    fg.add_argument("plan", help="plan key or plan file")
    fg.add_argument("--out", type=Path, default=None, help="PNG file (default docs/img/results_<key>.png)")
    fg.add_argument("--metric", default=None, help="metric to plot (default: the plan's first)")
    dc = rs_sub.add_parser("docs", help="regenerate every <!-- table:KEY --> section of the given Markdown files")
    dc.add_argument("files", type=Path, nargs="*", default=[Path("docs/results.md"), Path("docs/analysis.md"),
                                                              Path("docs/claims.md")])
    dc.add_argument("--check", action="store_true", help="write nothing; fail if a section differs from its records")
    ra = rs_sub.add_parser("association", help="Spearman rho across a plan's rows of two metrics' seed means, "
                                               "with a bootstrap over seeds stratified by row")
    ra.add_argument("plan", help="plan key or plan file")
    ra.add_argument("--x", required=True, help="first metric, e.g. method.reg_fraction")
    ra.add_argument("--y", default="top1", help="second metric (default: test top1)")
    ra.add_argument("--rows", default=None, help="comma-separated row labels (default: every row)")
    for sp in (tb, fg, dc, ra):
        sp.add_argument("--results-dir", type=Path, default=Path("results"))


def _reproduce(args: argparse.Namespace) -> None:
    from kdforge.plans import reproduce

    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    path = reproduce(args.plan, jobs=args.jobs, only=only, sliver=args.sliver, results_dir=args.results_dir,
                     runs_dir=args.runs_dir, threads=args.threads, extra=args.overrides,
                     teacher_store=args.teacher_store)
    print(f"records in {path}; table: kdforge results table {args.plan}")


def _results(args: argparse.Namespace) -> None:
    from kdforge.plans import figure, load_plan, sync_docs, table_for
    from kdforge.plans.records import read_records
    from kdforge.plans.tables import plan_path

    if args.results_command == "table":
        print(table_for(args.plan, args.results_dir), end="")
    elif args.results_command == "association":
        from kdforge.plans.association import describe, rank_association
        from kdforge.plans.tables import by_row

        plan = load_plan(plan_path(args.plan, args.results_dir))
        records = read_records(args.results_dir / f"{plan.key}.jsonl")
        keep = [r.strip() for r in args.rows.split(",")] if args.rows else [r.label for r in plan.rows]
        x, y = by_row(plan, records, args.x), by_row(plan, records, args.y)
        print(describe(rank_association({r: x[r] for r in keep if r in x}, y), args.x, args.y), end="")
    elif args.results_command == "figure":
        plan = load_plan(plan_path(args.plan, args.results_dir))
        out = args.out or Path("docs/img") / f"results_{plan.key}.png"
        print(figure(plan, read_records(args.results_dir / f"{plan.key}.jsonl"), out, args.metric))
    else:
        files = [f for f in args.files if f.exists()]
        stale = sync_docs(files, args.results_dir, check=args.check)
        if args.check and stale:
            raise KdforgeError(f"{len(stale)} generated section(s) differ from their records: {', '.join(stale)}; "
                               "run: kdforge results docs")
        print(f"{'checked' if args.check else 'regenerated'} the results sections of {len(files)} file(s)")


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _analyze_parser(sub: argparse._SubParsersAction) -> None:
    an = sub.add_parser("analyze", help="bias-variance of ensembles, gradient variance under KD (kdforge.analysis)")
    an_sub = an.add_subparsers(dest="analysis", required=True)
    bv = an_sub.add_parser("bias-variance", help="students per method on disjoint parts of the training split: bias, "
                                                 "variance, risk, regularization samples, calibration")
    bv.add_argument("config", type=Path)
    bv.add_argument("overrides", nargs="*")
    bv.add_argument("--methods", default="ce,kd:temperature=1,kd:temperature=4,wsl",
                    help="NAME[:key=value...] entries separated by commas; the first is the reference")
    bv.add_argument("--parts", type=int, default=4, help="members per method (disjoint parts of the training split)")
    bv.add_argument("--repeats", type=int, default=1, help="independent runs over the same parts (other seeds)")
    bv.add_argument("--bootstrap", action="store_true", help="bootstrap resamples instead of disjoint parts")
    bv.add_argument("--part-seed", type=int, action="append", default=None, dest="part_seeds",
                    help="seed of the partition into parts (default 1234); repeat to pool independent partitions, "
                         "as Yang et al.'s CE protocol pools two")
    gv = an_sub.add_parser("grad-variance", help="variance of the student's mini-batch gradient vs the KD weight")
    gv.add_argument("config", type=Path)
    gv.add_argument("overrides", nargs="*")
    gv.add_argument("--lambdas", type=_floats, default=[i / 10 for i in range(11)])
    gv.add_argument("--batches", type=int, default=200, help="mini-batches the variance is estimated over")
    gv.add_argument("--temperature", type=float, default=1.0, help="KD temperature (the paper's code: 1)")
    gv.add_argument("--student", type=Path, action="append", default=[],
                    help="also measure this saved student (model or run folder); repeatable")
    lin = an_sub.add_parser("linear", help="the linear experiment: measured vs predicted gradient variance")
    lin.add_argument("--lambdas", type=_floats, default=[i / 20 for i in range(21)])
    lin.add_argument("--batches", type=int, default=2000)
    sw = an_sub.add_parser("sweep", help="a bias-variance study per point of a grid (configs/sweeps/*.yaml), resumable")
    sw.add_argument("sweep", type=Path, help="sweep file, e.g. configs/sweeps/yang_width_fashion_mnist.yaml")
    sw.add_argument("overrides", nargs="*", help="key=value overrides added to every point")
    sw.add_argument("--sliver", action="store_true", help="the sweep's quick settings (teachers kept under --out)")
    kv = an_sub.add_parser("kdvr", help="KDVR's lam sweep per teacher quality: gradient variance and final loss")
    kv.add_argument("driver", type=Path, help="driver file, e.g. configs/sweeps/kdvr_mnist_linear.yaml")
    kv.add_argument("overrides", nargs="*", help="key=value overrides of the base config")
    kv.add_argument("--sliver", action="store_true", help="tiny settings: short teachers, one seed, 1 epoch")
    fig = an_sub.add_parser("sweep-figure", help="bias, variance, risk vs x (log) with +-2 jackknife SE")
    fig.add_argument("--png", type=Path, default=None, help="figure file (default OUT/sweep.png)")
    for sp in (bv, gv, lin, sw, fig, kv):
        sp.add_argument("--out", type=Path, required=True, help="output folder (analysis.json, run folders)")
    for sp in (bv, gv):
        sp.add_argument("--resume", action="store_true", help="reuse finished runs and continue unfinished ones")
        sp.add_argument("--overwrite", action="store_true", help="replace the runs of an earlier analysis")


def _analyze(args: argparse.Namespace) -> None:
    from kdforge.analysis import study
    from kdforge.api import load_config

    if args.analysis == "kdvr":
        from kdforge.analysis.kdvr import kdvr_study

        kdvr_study(args.driver, args.out, sliver=args.sliver, extra=tuple(args.overrides))
        print(f"written to {args.out}/kdvr.json")
        return
    if args.analysis in ("sweep", "sweep-figure"):
        from kdforge.analysis import sweep

        if args.analysis == "sweep":
            sweep.run_sweep(args.sweep, args.out, sliver=args.sliver, extra=tuple(args.overrides))
        print(f"figure: {sweep.sweep_figure(args.out, getattr(args, 'png', None))}; numbers: {args.out}/sweep.json")
        return
    if args.analysis == "linear":
        study.linear_study(args.out, args.lambdas, batches=args.batches)
    elif args.analysis == "bias-variance":
        cfg = load_config(args.config, args.overrides)
        study.bias_variance_study(cfg, study.parse_variants(cfg, args.methods), args.parts, args.out,
                                  repeats=args.repeats, bootstrap=args.bootstrap, resume=args.resume,
                                  overwrite=args.overwrite, part_seeds=args.part_seeds or [study.PART_SEED])
    else:
        study.grad_variance_study(load_config(args.config, args.overrides), args.lambdas, args.batches,
                                  args.temperature, args.out, resume=args.resume, overwrite=args.overwrite,
                                  students=args.student)
    print(f"written to {args.out}/analysis.json; see it with: kdforge report {args.out} --out report.html")


def _report(args: argparse.Namespace) -> None:
    from kdforge.analysis.html import write_report

    print(f"written to {write_report(args.run_dirs, args.out, args.title)}")


def _train(args: argparse.Namespace) -> None:
    from kdforge.api import ensure_teacher, load_config, run

    overrides = list(args.overrides)
    if args.teacher:
        cfg = load_config(args.config, overrides)
        if cfg.teacher is None:
            raise KdforgeError(f"{args.config} has no teacher section to train")
        teacher = ensure_teacher(cfg)
        print(f"teacher {teacher['model']}: test top-1 {teacher['test']['top1']:.2%} -> {teacher['dir']}")
        return
    cfg = load_config(args.config, ["method.name=ce", "method.params={}", *overrides])
    _print_summary(run(cfg, resume=args.resume, overwrite=args.overwrite))


def _distill(args: argparse.Namespace) -> None:
    from kdforge.api import load_config, run

    _print_summary(run(load_config(args.config, args.overrides), resume=args.resume, overwrite=args.overwrite))


def _eval(args: argparse.Namespace) -> None:
    from kdforge.evaluate import evaluate_saved

    print(json.dumps(evaluate_saved(args.checkpoint, args.data, args.root, args.split), indent=2))


def _compare(args: argparse.Namespace) -> None:
    from kdforge.compare import compare
    from kdforge.api import load_config

    cfg = load_config(args.config, args.overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = compare(cfg, methods, args.seeds, args.out, resume=args.resume, overwrite=args.overwrite)
    print(result.table)
    print(f"written to {result.out_dir}/ (table.md, table.csv, results.json, comparison.png)")


def _cache(args: argparse.Namespace) -> None:
    from kdforge.api import build_teacher_cache, cache_info, load_config

    if args.cache_command == "build":
        print(cache_info(build_teacher_cache(load_config(args.config, args.overrides), rebuild=args.rebuild)))
    else:
        print(cache_info(args.path, verify=args.verify))


def _search(args: argparse.Namespace) -> None:
    words = [*args.config, *getattr(args, "overrides", [])]
    if words[0] == "report":
        from kdforge.search.report import report
        from kdforge.search.space import load_search_config

        if len(words) < 2:
            raise KdforgeError("search report: give the search config, e.g. kdforge search report configs/search/x.yaml")
        cfg, _ = load_search_config(words[1], words[2:])
        print(report(cfg, args.storage or cfg.storage_url, args.top), end="")
        return
    from kdforge.search.runner import search

    print(search(words[0], words[1:], workers=args.workers, storage_url=args.storage))


def _demo(args: argparse.Namespace) -> None:
    from kdforge.demo import demo

    demo(seeds=args.seeds, out_dir=args.out, overrides=args.overrides)


def _print_summary(summary: dict) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun the main process speaks for all
        return
    test = summary["test"]
    print(f"{summary['method']} seed {summary['seed']}: test top-1 {test['top1']:.2%}, NLL {test['nll']:.3f}, "
          f"ECE {test['ece']:.2%} ({summary['train_time_s']:.1f} s) -> {summary['run_dir']}")


COMMANDS = {"train": _train, "distill": _distill, "eval": _eval, "compare": _compare, "cache": _cache, "search": _search,
            "demo": _demo, "analyze": _analyze, "report": _report, "reproduce": _reproduce, "results": _results}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    # Overrides may come after options (`compare x.yaml --seeds 5 train.epochs=3`), which argparse alone
    # does not allow for a positional list: collect the leftover key=value words as overrides.
    args, extra = parser.parse_known_args(argv)
    stray = [word for word in extra if word.startswith("-") or "=" not in word]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        COMMANDS[args.command](args)
    except KdforgeError as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
