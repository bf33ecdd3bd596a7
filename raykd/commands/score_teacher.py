"""Score candidate groups with a teacher on Ray Data actors, with a score cache.

    raykd score-teacher --candidates outputs/negatives/scifact-train-bm25.jsonl \\
        --teacher-kind cross_encoder --teacher-model minilm
    raykd score-teacher --candidates outputs/negatives/scifact-train-union \\
        --teacher bm25_contrastive --concurrency 4 --num-gpus 0.25   # a bundled spec, by name
    raykd score-teacher --candidates groups.parquet --teacher-kind bm25 \\
        --corpus raykd/datasets/scifact --cache none --num-shards 16

`--teacher` is a TeacherSpec file or the name of a bundled one (raykd/recipes/teachers/;
bm25_contrastive needs the student that its comment names). Writes
`--out/shard-XXXXX-of-YYYYY.parquet` (candidate groups with `teacher_scores`) and
`_manifest.yaml`. Rerunning the same command resumes: finished shards are skipped and pairs in
the cache (`--cache`, default outputs/score_cache) cost no teacher call. Prints pairs/s, cache
hits and the teacher's calibration diagnostics.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import yaml

from raykd.commands import describe
from raykd.config import TeacherSpec, load_teacher_spec, validate_teacher
from raykd.errors import ConfigError, one_line_errors
from raykd.recipes import require_file
from raykd.runtime import add_verbose_argument, init_ray, setup_logging
from raykd.storage import is_uri
from raykd.teachers.scoring import remote_fingerprint, score_candidate_groups

PROG = "raykd score-teacher"


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=describe(__doc__, PROG, prog),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", required=True,
                   help="candidate groups: a .jsonl[.gz]/.parquet file or a folder of them")
    spec = p.add_mutually_exclusive_group(required=True)
    spec.add_argument("--teacher", help="a YAML or JSON file holding a TeacherSpec, or a "
                                        "bundled spec's name (bm25_contrastive)")
    spec.add_argument("--teacher-kind", help="teacher kind (cross_encoder, bi_encoder, ...)")
    p.add_argument("--teacher-model", default=None, help="model for --teacher-kind")
    p.add_argument("--corpus", default=None, help="corpus (BEIR folder or file) for bm25 teachers")
    p.add_argument("--out", default=None,
                   help="output folder (default: outputs/scores/<candidates>-<fingerprint>)")
    p.add_argument("--concurrency", type=int, default=2, help="teacher actors")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per teacher actor")
    p.add_argument("--num-cpus", type=float, default=None, help="CPUs per teacher actor")
    p.add_argument("--batch-size", type=int, default=None,
                   help="pairs per teacher call (default: the spec's batch_size)")
    p.add_argument("--groups-per-batch", type=int, default=64, help="groups per actor call")
    p.add_argument("--num-shards", type=int, default=8, help="output shards (resume unit)")
    p.add_argument("--cache", default="outputs/score_cache",
                   help="score cache folder or URI ('none' disables)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an existing output made with other settings")
    p.add_argument("--temperature", type=float, default=1.0, help="for the diagnostics")
    add_verbose_argument(p)
    return p.parse_args(argv)


def load_spec(args) -> TeacherSpec:
    """The teacher: a spec file (or a bundled spec's name), else `--teacher-kind`."""
    overrides = {"batch_size": args.batch_size} if args.batch_size else {}
    if args.teacher:
        return load_teacher_spec(require_file(args.teacher, "teacher", "--teacher"), **overrides)
    raw = {"kind": args.teacher_kind, **overrides}
    if args.teacher_model:
        raw["model"] = args.teacher_model
    return validate_teacher(raw, "--teacher-kind")


def needs_corpus(spec: TeacherSpec) -> bool:
    """Whether the teacher reads corpus statistics (BM25, also as an ensemble member)."""
    return any(part.kind == "bm25" for part in spec.parts())


def check_inputs(args, spec: TeacherSpec) -> None:
    """The candidates (and the corpus a BM25 teacher needs) exist, before Ray starts."""
    for flag, path in (("--candidates", args.candidates), ("--corpus", args.corpus)):
        if path and not is_uri(path) and not Path(path).exists():
            raise ConfigError(flag, f"{path} does not exist")
    if needs_corpus(spec) and not args.corpus:
        raise ConfigError("--corpus", f"this {spec.kind} teacher scores with BM25, whose "
                                      "statistics come from the corpus: pass --corpus (a BEIR "
                                      "folder or corpus file)")


def print_diagnostics(out_dir: Path, temperature: float) -> None:
    from raykd.data.groups import iter_groups_parquet
    from raykd.teachers.diagnostics import format_diagnostics, teacher_diagnostics

    groups = (g for path in sorted(out_dir.glob("shard-*.parquet"))
              for g in iter_groups_parquet(path))
    try:
        stats = teacher_diagnostics(groups, temperature=temperature)
    except ValueError as err:
        print(f"  diagnostics: {err}")
        return
    (out_dir / "diagnostics.yaml").write_text(yaml.safe_dump(stats, sort_keys=False))
    print(format_diagnostics(stats))


@one_line_errors()
def main(argv=None, prog: str = PROG):
    args = parse_args(argv, prog)
    setup_logging(verbose_flag=args.verbose)
    spec = load_spec(args)
    check_inputs(args, spec)
    init_ray()
    from raykd.teachers.factory import build_teacher

    corpus = args.corpus
    make_teacher = functools.partial(build_teacher, spec, corpus)
    start = time.perf_counter()
    fingerprint = remote_fingerprint(make_teacher)
    name = Path(args.candidates.rstrip("/")).name.split(".")[0]
    out = Path(args.out or f"outputs/scores/{name}-{fingerprint}")
    report = score_candidate_groups(
        args.candidates, out, make_teacher, fingerprint, num_shards=args.num_shards,
        concurrency=args.concurrency, num_gpus=args.num_gpus, num_cpus=args.num_cpus,
        batch_size=spec.batch_size, groups_per_batch=args.groups_per_batch,
        cache=None if args.cache.lower() == "none" else args.cache, overwrite=args.overwrite)
    wall = time.perf_counter() - start
    hit = report.pairs_cached / report.pairs_processed if report.pairs_processed else 0.0
    print(f"\nteacher {fingerprint} on {args.candidates}")
    print(f"  {report.summary()}")
    print(f"  cache hits: {report.pairs_cached}/{report.pairs_processed} ({hit:.1%}); "
          f"cache: {args.cache}")
    print("  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
          + f", wall {wall:.1f}s")
    print(f"  scores written to {out}/ ({report.num_shards} shards)")
    (out / "report.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(report.to_dict())),
                                                    sort_keys=False))
    print_diagnostics(out, args.temperature)
    return report

