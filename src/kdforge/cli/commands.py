"""What each `kdforge` subcommand does: call the Python API or an application, print the result."""
from __future__ import annotations

import argparse
import json
import os
import textwrap
from pathlib import Path

from kdforge.errors import KdforgeError


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


def _analyze(args: argparse.Namespace) -> None:
    from kdforge.analysis import study
    from kdforge.analysis.summary import summary_table
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
        report = study.linear_study(args.out, args.lambdas, batches=args.batches)
    elif args.analysis == "bias-variance":
        cfg = load_config(args.config, args.overrides)
        report = study.bias_variance_study(cfg, study.parse_variants(cfg, args.methods), args.parts, args.out,
                                           repeats=args.repeats, bootstrap=args.bootstrap, resume=args.resume,
                                           overwrite=args.overwrite,
                                           part_seeds=args.part_seeds or [study.PART_SEED])
    else:
        report = study.grad_variance_study(load_config(args.config, args.overrides), args.lambdas, args.batches,
                                           args.temperature, args.out, resume=args.resume, overwrite=args.overwrite,
                                           students=args.student)
    print(summary_table(report))
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
    result = compare(cfg, args.methods, args.seeds, args.out, resume=args.resume, overwrite=args.overwrite,
                     jobs=args.jobs)
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
        from kdforge.search.report import report_study

        print(report_study(words[1:], study=args.study, storage=args.storage, out=args.out, top=args.top), end="")
        return
    if args.study or args.out:
        raise KdforgeError("--study and --out belong to `kdforge search report`; a search takes its study name and "
                           "folder from its config (name: ..., out: ...)")
    from kdforge.search.runner import search

    print(search(words[0], words[1:], workers=args.workers, storage_url=args.storage))


def _methods(args: argparse.Namespace) -> None:
    from kdforge.api import method_catalog

    catalog = method_catalog()
    width = max(map(len, catalog))
    for name, line in catalog.items():
        print(f"{name:<{width}}  {line}")
    print("\nparams of one: kdforge describe METHOD; set them with method.params.KEY=VALUE")


def _models(args: argparse.Namespace) -> None:
    from kdforge.api import model_catalog

    catalog = model_catalog()
    width = max(map(len, catalog))
    for name, params in catalog.items():
        print(textwrap.fill(params, 110, initial_indent=f"{name:<{width}}  ", subsequent_indent=" " * (width + 2)))
    print("\nchoose one with student.name=NAME (teacher.model.name=NAME); set params with student.params.KEY=VALUE")


def _describe(args: argparse.Namespace) -> None:
    from kdforge.api import method_catalog, method_params

    params = method_params(args.method)
    print(f"{args.method}: {method_catalog()[args.method]}\n")
    if not params:
        print("no params")
    for p in params:
        print(f"  {p.name} ({p.type}, default {p.default})")
        print(textwrap.fill(p.description, 110, initial_indent=" " * 6, subsequent_indent=" " * 6))


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
            "demo": _demo, "analyze": _analyze, "report": _report, "reproduce": _reproduce, "results": _results,
            "methods": _methods, "models": _models, "describe": _describe}
