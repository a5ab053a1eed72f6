"""python -m training: generate | train | evaluate | publish | rollback | fold-log | ensure | experiment | experiment-report.

Run `python -m training COMMAND --help` for each command's options. Errors in input
files or in reaching Redis end the run with one line naming the file/row/column or the
address, and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import redis

from core import contract, settings
from core.bundle import BundleError
from core.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from core.flags import add_flags, from_flags
from core.redis_conn import connect
from training import publish as publishing
from training.csvio import DataError
from training.params import TrainParams
from training.schema import EVENTS_CSV

DEFAULT_DATA = Path("data/default")
DEFAULT_MODELS = Path("models")


@contextlib.contextmanager
def redis_client():
    """The configured Redis, or the project's private one: the one `make serve` runs if it
    runs (publish and rollback beside a serving service), else one started for this command."""
    url = settings.redis_url_from_env()
    embedded = None
    if not url:
        embedded = EmbeddedRedis(settings.var_dir_from_env() / "redis").attach_or_start()
        url = embedded.url
    client = connect(url, socket_timeout=30, socket_connect_timeout=3)
    try:
        client.ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        raise SystemExit(f"error: cannot reach Redis at {settings.redis_address(url)}: {exc}") from None
    try:
        yield client
    finally:
        client.close()
        if embedded:
            embedded.stop()


def cmd_generate(args) -> None:
    from training.synthetic import WorldParams, generate, write_world

    params = from_flags(WorldParams, args)
    if args.scale != 1.0:
        params = params.times(args.scale)
    params.end = args.end if args.end is not None else int(time.time()) // 3600 * 3600
    t0 = time.perf_counter()
    world = generate(params)
    write_world(world, args.out, params)
    ds = world.dataset
    print(
        f"world written to {args.out}: {ds.n_users} users, {ds.n_communities} communities, "
        f"{ds.n_posts} posts, {len(ds.e_ts)} events in {time.perf_counter() - t0:.1f}s"
    )


def ensure_default_world(args) -> None:
    """`make train` on a fresh clone: the default data directory is generated, as
    `make serve` does; any other missing directory is the caller's mistake (an error)."""
    if args.data == DEFAULT_DATA and not (args.data / EVENTS_CSV).exists():
        print(f"{args.data} has no {EVENTS_CSV}: generating the synthetic default world first")
        # `make data`'s world from generate's own defaults: train's flags are not the
        # world's (its --seed would become the world's seed).
        cmd_generate(build_parser().parse_args(["generate", "--out", str(args.data)]))


def cmd_train(args) -> Path:
    from training.train import train

    ensure_default_world(args)
    bundle = train(args.data, args.models, from_flags(TrainParams, args), progress=not args.quiet)
    print_outputs(bundle)
    return bundle


def print_outputs(bundle: Path) -> None:
    """Where everything went, and the headline numbers with their spread."""
    import json

    report = json.loads((bundle / contract.REPORT_JSON_FILE).read_text())
    gate = report["gate"]["metric"]
    print(f"\nbundle:  {bundle}")
    print(f"report:  {bundle / contract.REPORT_MD_FILE}  (and {contract.REPORT_JSON_FILE}, a plot beside them)")
    for w in report["windows"] + report.get("pooled", []):
        info = w["window"]
        where = (
            f"all {info['split_points']} split points" if info["split_ts"] == "all" else f"split at {info['split_ts']}"
        )
        print(
            f"\n{gate}, {where}, next {info['days']:g} days ({info['users']} users, "
            "mean [95% interval]; pipeline minus method, paired):"
        )
        for name, row in w["methods"].items():
            cell = row[gate]
            line = f"  {name:<22} {cell['mean']:.4f} [{cell['ci95'][0]:.4f}, {cell['ci95'][1]:.4f}]"
            v = w["pipeline_vs"][gate].get(name)
            if v:
                line += f"   {v['difference']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] {v['verdict']}"
            print(line)
    # The one answer, last: the headline's nearest baseline, and what the publish gate reads.
    from training.evaluate import closest_baseline, gate_phrase, headline_phrase, power_note

    pipeline = report["methods"]["pipeline"][gate]["mean"]
    print(f"\n{headline_phrase(report)}\n  pipeline {gate} {pipeline:.4f}", end="")
    nearest = closest_baseline(report)
    if nearest:
        name, v = nearest
        print(
            f"; the nearest baseline, {name}: {v['difference']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] "
            f"{v['verdict']}",
            end="",
        )
    print(f"\nGate: {gate_phrase(report)}.")
    note = power_note(report)
    if note:
        print(note)


def explain_environment(bundle: Path) -> None:
    """After a mismatch: where this machine differs from the one that trained the bundle
    (another CPU's SIMD kernels move the last bits; docs/training.md "Reproducing the tables")."""
    from training import provenance

    saved = json.loads((bundle / contract.REPORT_JSON_FILE).read_text()).get("training", {}).get("environment")
    differ = provenance.differences(saved, provenance.numeric_environment())
    if differ:
        print("the bundle was trained in another environment (last-bit differences are expected):", file=sys.stderr)
        for line in differ:
            print(f"  {line}", file=sys.stderr)
    else:
        print("the bundle was trained in this same environment: the difference is not the machine's", file=sys.stderr)


def cmd_evaluate(args) -> None:
    from training.reevaluate import reevaluate

    bundle = args.models / args.version if args.version else latest_bundle(args.models)
    report, mismatches = reevaluate(bundle, args.data)
    print_outputs(bundle)
    if mismatches:
        print(
            f"error: recomputed evaluation differs from the saved report in {len(mismatches)} places:", file=sys.stderr
        )
        for m in mismatches[:20]:
            print(f"  {m}", file=sys.stderr)
        explain_environment(bundle)
        raise SystemExit(1)
    print("recomputed from the bundle and the data: every number matches the saved report")


def cmd_compare(args) -> None:
    from training.compare import compare

    for a in (args.a, args.b):
        if not a.is_dir():
            raise SystemExit(f"error: {a}: no such bundle directory")
    print(
        f"B = {args.b}\nA = {args.a}\n{args.method} NDCG@10, paired over the same users, pooled over the split points:"
    )
    for r in compare(args.a, args.b, args.data, args.method):
        print(
            f"  next {r.days:g} days, {r.users} user-requests: A {r.a:.4f}  B {r.b:.4f}  "
            f"B - A {r.difference:+.4f} [{r.ci95[0]:+.4f}, {r.ci95[1]:+.4f}] {r.verdict}"
        )


def cmd_ranker_check(args) -> None:
    import json
    import tempfile

    from training import ranker_check

    bundle = args.models / args.version if args.version else latest_bundle(args.models)
    print(f"bundle {bundle}: replaying its evaluation, capturing the pipeline's candidates", flush=True)
    with tempfile.TemporaryDirectory(prefix="ranker-check-") as scratch:
        try:
            report = ranker_check.run(bundle, args.data, args.capture or Path(scratch))
        except ValueError as exc:
            raise SystemExit(f"error: {bundle}: {exc}") from None
    print(ranker_check.markdown(report), end="")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def latest_bundle(models_dir: Path) -> Path:
    versions = contract.list_versions(models_dir)
    if not versions:
        raise SystemExit(f"error: no model bundle in {models_dir} (run make train)")
    return models_dir / versions[-1]


def cmd_publish(args) -> None:
    bundle = args.models / args.version if args.version else latest_bundle(args.models)
    with redis_client() as client:
        try:
            version = publishing.publish(
                bundle, client, keep=args.keep, force=args.force, prune_bundles=True, serve=not args.stage
            )
        except publishing.GateRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(3) from None
        except BundleError as exc:  # corrupt or half-written: the file and the reason
            print(f"error: not published: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    if args.stage:
        print(f"published {version} from {bundle} without serving it (make experiment START={version} SHARE=10)")
        return
    print(f"published {version} from {bundle}; serving switches at its next pointer check")


def cmd_rollback(args) -> None:
    with redis_client() as client:
        try:
            target = publishing.rollback(client, args.models)
        except RuntimeError as exc:
            raise SystemExit(f"error: {exc}") from None
    print(f"current version is now {target}")


def cmd_fold_log(args) -> None:
    """Fold the live event log (writes since the last fold) into the data directory."""
    from training.live_log import fold_log

    with redis_client() as client:
        f = fold_log(client, args.data)
    if not f.anything:
        print(f"nothing new in the event log; {args.data} unchanged")
        return
    print(
        f"folded {f.posts} post events, {f.engagements} engagements and {f.memberships} membership events "
        f"into {args.data} (log position {f.last})"
    )
    if f.not_folded:
        print(
            f"{f.not_folded} events stay live only (blocks, mutes, bans ended, moderators' rules; "
            f"membership events too when {args.data} has no memberships.csv)"
        )


def cmd_experiment(args) -> None:
    """Start, stop, promote or show the experiment (training/experiment.py)."""
    from training import experiment

    with redis_client() as client:
        try:
            if args.action == "start":
                if not args.version:
                    raise experiment.ExperimentError(
                        "START: the candidate version is required (make experiment START=<version> SHARE=10)"
                    )
                defn = experiment.start(
                    client,
                    args.models,
                    args.version,
                    args.share,
                    salt=args.salt,
                    shadow_rate=args.shadow,
                    max_excess=args.max_excess,
                    min_requests=args.min_requests,
                    grace_s=args.grace,
                )
                print(f"started {experiment.describe(defn)}; it serves after {defn.grace_s:g} s")
            elif args.action == "stop":
                defn = experiment.stop(client)
                print(f"stopped experiment {defn.id}: everyone gets {defn.control} at the next pointer check")
            elif args.action == "promote":
                defn = experiment.promote(client, args.models)
                print(f"promoted {defn.candidate}: it is the current version; experiment {defn.id} ended")
            else:
                defn = experiment.running(client)
                print(
                    experiment.describe(defn)
                    if defn
                    else f"no experiment is running{experiment.last_stopped_note(client)}"
                )
        except experiment.ExperimentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


def cmd_experiment_report(args) -> None:
    from training.experiment_report import write_report

    with redis_client() as client:
        try:
            if args.draws < 100 or not 0.5 <= args.confidence < 1:
                raise ValueError("--draws must be at least 100 and --confidence in [0.5, 1)")
            experiment_id, analysis, md = write_report(
                client, args.out, args.experiment, draws=args.draws, seed=args.seed, confidence=args.confidence
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    print(md.read_text())
    print(f"report: {md} (and report.json, report.png beside it)")


def cmd_convert(args) -> None:
    """A public log in its original format -> the training schema (training/convert/)."""
    import json

    from training.convert import FORMATS, WINDOWED

    window = {k: v for k in ("since", "until") if (v := getattr(args, k)) is not None}
    if window and args.format not in WINDOWED:
        print(f"error: --since/--until: only for {', '.join(sorted(WINDOWED))}, not {args.format}", file=sys.stderr)
        raise SystemExit(2)
    counts = FORMATS[args.format](args.src, args.out, **window)
    print(f"converted {args.format} log {args.src} into {args.out}:")
    print(json.dumps(counts, indent=1))


def iso_time(value: str) -> int:
    """--since/--until: an ISO date (00:00 UTC) or date-time -> unix seconds."""
    from training.convert.mailing_lists import parse_day

    try:
        return parse_day(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_ensure(args) -> None:
    """What `make serve` needs: data, a bundle, and that bundle published."""
    if not (args.data / EVENTS_CSV).exists():
        args.out = args.data
        cmd_generate(args)
    versions = contract.list_versions(args.models)
    if not versions or not loadable(args.models / versions[-1]):
        # No bundle, or one this code cannot serve (e.g. trained before a feature change).
        cmd_train(args)
    bundle = latest_bundle(args.models)
    with redis_client() as client:
        current = publishing.current_version(client)
        if current is None or not loadable(args.models / current):
            # Whatever the pointer names cannot serve: the gate has nothing to protect.
            publishing.publish(bundle, client, keep=args.keep, force=True)
        elif not client.exists(contract.published_key(current)):
            # Its keys were lost, or it was published before the marker existed: write them again.
            publishing.publish(args.models / current, client, keep=args.keep, force=True)
        else:
            print(f"serving version {current} is published")


def loadable(bundle: Path) -> bool:
    from core.bundle import BundleError, load_bundle

    try:
        load_bundle(bundle, verify=False)
    except BundleError:
        return False
    return True


def percent(text: str) -> float:
    """An argparse type: a number (SHARE=10), refused with a one-line error otherwise."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def world_opts(p):
        from training.synthetic import WorldParams

        add_flags(p, WorldParams)
        p.add_argument(
            "--scale", type=float, default=1.0, help="the default world's sizes times this (5 gives 1M posts)"
        )
        p.add_argument("--end", type=int, default=None, help="unix time of the world's end (default: now)")

    def train_opts(p):
        p.add_argument("--data", type=Path, default=DEFAULT_DATA)
        p.add_argument("--models", type=Path, default=DEFAULT_MODELS)
        add_flags(p, TrainParams)
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("generate", help="write the synthetic world (CSV + truth/)")
    p.add_argument("--out", type=Path, default=DEFAULT_DATA)
    world_opts(p)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("train", help="train a bundle from a data directory")
    train_opts(p)
    p.set_defaults(fn=cmd_train)

    for name, fn, text in (
        ("publish", cmd_publish, "write a bundle's features to Redis and make it current"),
        ("rollback", cmd_rollback, "make the previous published version current again"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--models", type=Path, default=DEFAULT_MODELS)
        p.add_argument("--version", default=None, help="bundle version (default: the newest)")
        p.add_argument("--keep", type=int, default=3, help="published versions kept for rollback")
        if name == "publish":
            p.add_argument("--force", action="store_true", help="publish even if the gate finds it worse")
            p.add_argument(
                "--stage", action="store_true", help="publish without serving it (a candidate for make experiment)"
            )
        p.set_defaults(fn=fn)

    p = sub.add_parser("experiment", help="start, stop, promote or show an experiment (a second version live)")
    p.add_argument("action", choices=("start", "stop", "promote", "status"))
    p.add_argument("version", nargs="?", default=None, help="start: the candidate version (published)")
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    p.add_argument(
        "--share", type=percent, default=10.0, help="percent of users the candidate serves, 0 (shadow only) to 99"
    )
    p.add_argument("--salt", default=None, help="salt of the user hash (default: random; a new salt reshuffles users)")
    p.add_argument(
        "--shadow", type=float, default=0.0, help="share of control answers the candidate also ranks, unserved"
    )
    p.add_argument(
        "--max-excess", type=float, default=0.05, help="stop when its error or degraded rate exceeds control's by this"
    )
    p.add_argument(
        "--min-requests", type=int, default=200, help="requests per variant and worker before that check judges"
    )
    p.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds before the candidate serves (>= the workers' reload interval)",
    )
    p.set_defaults(fn=cmd_experiment)

    p = sub.add_parser("experiment-report", help="per-variant engagement rates with bootstrap intervals and a verdict")
    p.add_argument("--experiment", default=None, help="experiment id (default: the running one, else the last one)")
    p.add_argument(
        "--out", type=Path, default=None, help="directory for report.md and report.png (default: reports/<id>)"
    )
    p.add_argument("--draws", type=int, default=2000, help="bootstrap draws")
    p.add_argument(
        "--confidence", type=float, default=0.95, help="of the verdict (positive and negative rates together)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_experiment_report)

    p = sub.add_parser("evaluate", help="recompute a bundle's evaluation from the bundle and its data")
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--version", default=None, help="bundle version (default: the newest)")
    p.add_argument("--data", type=Path, default=None, help="data directory (default: the one it was trained on)")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser(
        "ranker-check",
        help="would another ranker (linear refit, lambdarank, EASE features) rank the candidates better?",
    )
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--version", default=None, help="bundle version (default: the newest)")
    p.add_argument("--data", type=Path, default=None, help="data directory (default: the one it was trained on)")
    p.add_argument("--capture", type=Path, default=None, help="keep the captured candidates here (default: discarded)")
    p.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    p.set_defaults(fn=cmd_ranker_check)

    p = sub.add_parser("compare", help="two bundles trained on the same data: paired NDCG@10 difference, B minus A")
    p.add_argument("a", type=Path, help="bundle directory A (the reference)")
    p.add_argument("b", type=Path, help="bundle directory B (the change)")
    p.add_argument("--data", type=Path, default=None, help="data directory (default: the one they were trained on)")
    p.add_argument("--method", default="pipeline", help="which evaluated method of both bundles (default: pipeline)")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("fold-log", help="fold the service's live event log into a data directory")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.set_defaults(fn=cmd_fold_log)

    from training.convert import FORMATS

    p = sub.add_parser(
        "convert",
        help="convert a public log (MovieLens, Last.fm, Stack Exchange, Reddit, mailing lists, Discourse) to the input schema",
    )
    p.add_argument("format", choices=sorted(FORMATS), help="source format")
    p.add_argument("src", type=Path, help="directory with the source files (plain, .gz or in a .zip)")
    p.add_argument("out", type=Path, help="output directory for events.csv, posts.csv, communities.csv")
    p.add_argument(
        "--since",
        type=iso_time,
        default=None,
        help="keep messages (mailing-lists) or threads (reddit-threads) dated from this ISO date (UTC)",
    )
    p.add_argument(
        "--until",
        type=iso_time,
        default=None,
        help="keep messages, threads and comments dated before this ISO date (UTC); mailing-lists, reddit-threads",
    )
    p.set_defaults(fn=cmd_convert)

    p = sub.add_parser("ensure", help="generate, train and publish whatever is missing (make serve)")
    train_opts(p)
    world_opts(p)
    p.add_argument("--keep", type=int, default=3)
    p.set_defaults(fn=cmd_ensure)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (DataError, EmbeddedRedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except redis.exceptions.ConnectionError as exc:
        print(f"error: lost Redis connection: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
