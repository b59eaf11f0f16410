"""The `kdforge` argument parser: every argument has help text and the help shows its default; the global flags
(`--debug`, `--progress-every`) are accepted before or after the subcommand."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from kdforge import __version__

METHODS_HELP = ("NAME[:key=value...] entries separated by commas, e.g. ce,kd:temperature=1,kd:temperature=8; "
                "params not given come from the config when it names the method, else from the method itself")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """`(default: X)` after every help text, unless the text already says its default or there is none to say."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action) or text


class Parser(argparse.ArgumentParser):
    """Defaults shown in every help, and the global flags on every (sub)command: on a subcommand their default is
    SUPPRESS, so a flag given before the subcommand is not reset by the subcommand's parser."""

    def __init__(self, *args: Any, top: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="show tracebacks of input errors",
                          default=False if top else argparse.SUPPRESS)
        self.add_argument("--progress-every", type=_seconds, metavar="SECONDS", default=_env_seconds() if top else
                          argparse.SUPPRESS, help="a progress line this often when stderr is not a terminal (nohup, "
                                                  "cluster logs); on a terminal a progress bar")


def _env_seconds() -> float:
    """The default of --progress-every: $KDFORGE_PROGRESS_EVERY when it holds a number, else 30."""
    try:
        return _seconds(os.environ.get("KDFORGE_PROGRESS_EVERY", "30"))
    except argparse.ArgumentTypeError:
        return 30.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds (0 or more), got {text!r}")
    return value


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _config_args(sp: argparse.ArgumentParser, what: str = "experiment YAML file") -> None:
    sp.add_argument("config", type=Path, help=what)
    sp.add_argument("overrides", nargs="*", default=[], help="key.path=value overrides, e.g. train.epochs=5")


def _run_args(sp: argparse.ArgumentParser, what: str = "run folder") -> None:
    sp.add_argument("--resume", action="store_true", help=f"continue from the {what}'s latest checkpoints")
    sp.add_argument("--overwrite", action="store_true", help=f"discard the {what}'s earlier checkpoints")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="kdforge", description="Knowledge distillation experiments.", top=True)
    p.add_argument("--version", action="version", version=f"kdforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train the student alone (method ce), or the teacher with --teacher")
    _config_args(train)
    _run_args(train)
    train.add_argument("--teacher", action="store_true", help="train and save the teacher from teacher.recipe")
    distill = sub.add_parser("distill", help="distill the teacher into the student with the config's method")
    _config_args(distill)
    _run_args(distill)
    ev = sub.add_parser("eval", help="evaluate a saved model: a model, run or checkpoint folder")
    ev.add_argument("checkpoint", type=Path, metavar="FOLDER",
                    help="a model folder (model.json), a run folder, or a checkpoint folder (checkpoints/epoch_0009)")
    ev.add_argument("--data", default=None, help="data set name (default: the one the folder records)")
    ev.add_argument("--root", default=None, help="data folder (default: the recorded one, $KDFORGE_DATA or "
                                                 "../shared/data)")
    ev.add_argument("--split", choices=["val", "test"], default="test", help="which split to evaluate on")
    _compare_parser(sub)
    _cache_parser(sub)
    _analyze_parser(sub)
    _misc_parsers(sub)
    _results_parser(sub)
    return p


def _compare_parser(sub: argparse._SubParsersAction) -> None:
    cmp_ = sub.add_parser("compare", help="run several methods over several seeds; table + plot")
    _config_args(cmp_)
    cmp_.add_argument("--seeds", type=int, default=3, help="seeds per method (0, 1, ...)")
    cmp_.add_argument("--methods", default="ce,kd,wsl", help=METHODS_HELP)
    cmp_.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process with this process's torch threads "
                                                          "(the numbers of --jobs 1); OMP_NUM_THREADS=N sets them")
    cmp_.add_argument("--out", type=Path, default=None, help="output folder (default runs/<name>)")
    _run_args(cmp_, "comparison")


def _cache_parser(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", help="teacher-output cache: build one for a config, or describe one")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    cb = cache_sub.add_parser("build", help="record the teacher's outputs for CONFIG (teacher.cache settings)")
    _config_args(cb)
    cb.add_argument("--rebuild", action="store_true", help="build again even when a matching cache exists")
    ci = cache_sub.add_parser("info", help="what a cache folder holds; --verify checks every shard's sha256")
    ci.add_argument("path", type=Path, help="cache folder")
    ci.add_argument("--verify", action="store_true", help="check every shard's sha256 (reads the whole cache)")


def _misc_parsers(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="one self-contained HTML page of run, comparison and analysis folders")
    rep.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run, comparison or analysis folders")
    rep.add_argument("--out", type=Path, default=Path("report.html"), help="the HTML file to write")
    rep.add_argument("--title", default="kdforge report", help="the page's title")
    se = sub.add_parser("search", help="KD-Zero distiller search, or `search report` of a study")
    se.add_argument("config", nargs="+", metavar="CONFIG", help=(
        "search YAML and key=value overrides; `report CONFIG` or `report --study NAME --storage URL` lists the best "
        "programs, their fitness curves and a plot of fitness over generations"))
    se.add_argument("--workers", type=int, default=1, help="worker processes started here")
    se.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///<out>/search.db)")
    se.add_argument("--study", default=None, help="report: the study name (with --storage, no config needed)")
    se.add_argument("--out", type=Path, default=None, help="report: folder of report.md and the plots "
                                                           "(default: the search folder, or runs/search/<study>)")
    se.add_argument("--top", type=int, default=10, help="report: how many programs to list")
    se.set_defaults(overrides=[])
    demo = sub.add_parser("demo", help="teacher, student alone, KD and WSL on scikit-learn digits, 3 seeds")
    demo.add_argument("--seeds", type=int, default=3, help="seeds per method")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    demo.add_argument("overrides", nargs="*", default=[], help="key.path=value overrides of the preset")
    sub.add_parser("methods", help="list the registered methods, one line each")
    sub.add_parser("models", help="list the registered models with their params and defaults")
    de = sub.add_parser("describe", help="a method's params: type, default and what each does")
    de.add_argument("method", help="a registered method name (see kdforge methods)")


def _analyze_parser(sub: argparse._SubParsersAction) -> None:
    an = sub.add_parser("analyze", help="bias-variance of ensembles, gradient variance under KD (kdforge.analysis)")
    an_sub = an.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    bv = an_sub.add_parser("bias-variance", help="students per method on disjoint parts of the training split: bias, "
                                                 "variance, risk, regularization samples, calibration")
    _config_args(bv)
    bv.add_argument("--methods", default="ce,kd:temperature=1,kd:temperature=4,wsl",
                    help=METHODS_HELP + "; the first is the reference")
    bv.add_argument("--parts", type=int, default=4, help="members per method (disjoint parts of the training split)")
    bv.add_argument("--repeats", type=int, default=1, help="independent runs over the same parts (other seeds)")
    bv.add_argument("--bootstrap", action="store_true", help="bootstrap resamples instead of disjoint parts")
    bv.add_argument("--part-seed", type=int, action="append", default=None, dest="part_seeds",
                    help="seed of the partition into parts (default 1234); repeat to pool independent partitions, "
                         "as Yang et al.'s CE protocol pools two")
    gv = an_sub.add_parser("grad-variance", help="variance of the student's mini-batch gradient vs the KD weight")
    _config_args(gv)
    gv.add_argument("--lambdas", type=_floats, default=[i / 10 for i in range(11)],
                    help="KD weights, separated by commas")
    gv.add_argument("--batches", type=int, default=200, help="mini-batches the variance is estimated over")
    gv.add_argument("--temperature", type=float, default=1.0, help="KD temperature (the paper's code: 1)")
    gv.add_argument("--student", type=Path, action="append", default=[],
                    help="also measure this saved student (model or run folder); repeatable")
    lin = an_sub.add_parser("linear", help="the linear experiment: measured vs predicted gradient variance")
    lin.add_argument("--lambdas", type=_floats, default=[i / 20 for i in range(21)],
                     help="KD weights, separated by commas")
    lin.add_argument("--batches", type=int, default=2000, help="mini-batches the variance is estimated over")
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


def _results_parser(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser("reproduce", help="run a results plan (every row x seed, resumable) into results/<key>.jsonl")
    rp.add_argument("plan", type=Path, help="plan file, e.g. results/plans/cifar10_cpu.yaml")
    rp.add_argument("overrides", nargs="*", default=[], help="key=value overrides added to every row")
    rp.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process")
    rp.add_argument("--threads", type=int, default=None,
                    help="torch threads per run (default: cores // jobs); recorded, as numbers can depend on it")
    rp.add_argument("--only", default=None, help="comma-separated row labels to run (the others are kept)")
    rp.add_argument("--sliver", action="store_true", help="the plan's sliver: first seed, tiny settings (CI)")
    rp.add_argument("--results-dir", type=Path, default=Path("results"), help="where <key>.jsonl goes")
    rp.add_argument("--runs-dir", type=Path, default=Path("runs/results"), help="where the run folders go")
    rp.add_argument("--teacher-store", type=Path, default=None,
                    help="where teachers are trained and reused (default: each config's teacher.store_dir)")
    rs = sub.add_parser("results", help="tables and figures generated from results/<key>.jsonl")
    rs_sub = rs.add_subparsers(dest="results_command", required=True, metavar="ACTION")
    tb = rs_sub.add_parser("table", help="print a plan's table (Markdown, paired differences)")
    tb.add_argument("plan", help="plan key (results/plans/<key>.yaml) or plan file")
    fg = rs_sub.add_parser("figure", help="write a plan's dot plot with intervals")
    fg.add_argument("plan", help="plan key or plan file")
    fg.add_argument("--out", type=Path, default=None, help="PNG file (default docs/img/results_<key>.png)")
    fg.add_argument("--metric", default=None, help="metric to plot (default: the plan's first)")
    dc = rs_sub.add_parser("docs", help="regenerate every <!-- table:KEY --> section of the given Markdown files")
    dc.add_argument("files", type=Path, nargs="*", help="Markdown files",
                    default=[Path("docs/results.md"), Path("docs/analysis.md"), Path("docs/claims.md")])
    dc.add_argument("--check", action="store_true", help="write nothing; fail if a section differs from its records")
    ra = rs_sub.add_parser("association", help="Spearman rho across a plan's rows of two metrics' seed means, "
                                               "with a bootstrap over seeds stratified by row")
    ra.add_argument("plan", help="plan key or plan file")
    ra.add_argument("--x", required=True, help="first metric, e.g. method.reg_fraction")
    ra.add_argument("--y", default="top1", help="second metric")
    ra.add_argument("--rows", default=None, help="comma-separated row labels (default: every row)")
    for sp in (tb, fg, dc, ra):
        sp.add_argument("--results-dir", type=Path, default=Path("results"), help="where <key>.jsonl files are")
