"""Fine-tune a cross-encoder teacher, then evaluate it by re-ranking.

    raykd train-teacher                                   # MiniLM -> SciFact CE, 1 epoch
    raykd train-teacher --epochs 2 --num-negatives 15 --lr 1e-5
    raykd train-teacher --distill-from ensemble --distill-weight 0.5
    raykd train-teacher --eval-cascade 20 \\
        --eval-cascade-run outputs/rerank/ensemble-dev/run.trec    # cheap dev check on CPU
    raykd train-teacher --model /models/electra-base --num-workers 4 --use-gpu

The teacher learns on a dataset's train split. Training lists are 1 labelled positive +
`--num-negatives` negatives sampled from the union of BM25 and dense (MiniLM) top-`--depth`
(METHODS.md 3(d): listwise softmax cross-entropy), on Ray Train (DDP; gloo on CPU, bf16
autocast on GPU). `--distill-from` adds
`--distill-weight` x KL(teacher || student) over the same lists, the teacher scored through the
Ray Data scoring stage and its cache. Saves `<out>/model` (a HF folder that
`teacher_spec(kind="cross_encoder", model=...)` loads), `<out>/teacher.yaml` (that spec, with the
trained lengths: pass it to `raykd rerank --teacher`) and `<out>/training.json`; then prints the
metrics of re-ranking `--eval-split` (`none` skips it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from raykd.commands import describe
from raykd.config import load_teacher_spec
from raykd.data.beir import BeirDataset
from raykd.datasets import scifact_dir
from raykd.errors import ConfigError, one_line_errors
from raykd.eval.rerank import (
    DEFAULT_EMBEDDING_CACHE,
    DEFAULT_SCORE_CACHE,
    check_rerank_options,
    rerank,
    resolve_teacher,
)
from raykd.eval.retrieval import format_table
from raykd.runtime import add_verbose_argument, init_ray, setup_logging
from raykd.train.cross_encoder import (
    make_train_spec,
    mine_training_groups,
    score_training_groups,
    train_cross_encoder,
)

PROG = "raykd train-teacher"


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=describe(__doc__, PROG, prog),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", help="'minilm' (bundled) or a HF encoder folder")
    p.add_argument("--data", default=str(scifact_dir()), help="a BEIR-layout dataset folder")
    p.add_argument("--split", default="train", help="training split")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=8, help="queries per worker per step")
    p.add_argument("--num-negatives", type=int, default=7, help="negatives per list")
    p.add_argument("--query-max-length", type=int, default=64)
    p.add_argument("--passage-max-length", type=int, default=192,
                   help="pairs are cut to query + passage max length, on the passage side")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers (DDP)")
    p.add_argument("--cpus-per-worker", type=float, default=2)
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker, bf16 autocast")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--negatives-from", choices=("union", "bm25", "dense"), default="union")
    p.add_argument("--depth", type=int, default=100, help="first-stage depth per source")
    p.add_argument("--sampling", choices=("random", "hardest"), default="random")
    p.add_argument("--first-stage-model", default="minilm", help="dense mining bi-encoder")
    p.add_argument("--distill-from", default=None,
                   help="teacher preset (ensemble, bm25, ...) or TeacherSpec file")
    p.add_argument("--distill-weight", type=float, default=0.0)
    p.add_argument("--distill-temperature", type=float, default=1.0)
    p.add_argument("--out", default=None, help="default: outputs/teachers/cross-encoder-<name>")
    p.add_argument("--eval-split", default="dev", help="split to re-rank after training; 'none'")
    p.add_argument("--eval-depth", type=int, default=100, help="first-stage depth for eval")
    p.add_argument("--eval-cascade", type=int, default=None, metavar="K",
                   help="evaluate by re-ranking only the top K of --eval-cascade-run")
    p.add_argument("--eval-cascade-run", default=None)
    p.add_argument("--cache", default=DEFAULT_SCORE_CACHE, help="score cache ('none' disables)")
    p.add_argument("--embedding-cache", default=DEFAULT_EMBEDDING_CACHE)
    p.add_argument("--concurrency", type=int, default=2, help="actors for encoding and scoring")
    add_verbose_argument(p)
    return p.parse_args(argv)


def check_args(args):
    """Every option checked before Ray or a model starts: (train spec, distill teacher spec)."""
    spec = make_train_spec(
        model=args.model, epochs=args.epochs, max_steps=args.max_steps, lr=args.lr,
        weight_decay=args.weight_decay, batch_size=args.batch_size,
        num_negatives=args.num_negatives, query_max_length=args.query_max_length,
        passage_max_length=args.passage_max_length, warmup_ratio=args.warmup_ratio,
        seed=args.seed, num_workers=args.num_workers, cpus_per_worker=args.cpus_per_worker,
        use_gpu=args.use_gpu, distill_weight=args.distill_weight,
        distill_temperature=args.distill_temperature, log_every=args.log_every)
    if args.depth < 1:
        raise ConfigError("depth", f"must be >= 1, got {args.depth}")
    teacher = None
    if args.distill_from:
        if args.distill_weight <= 0:
            raise ConfigError("distill_weight", "--distill-from needs --distill-weight > 0")
        teacher = (load_teacher_spec(args.distill_from) if Path(args.distill_from).is_file()
                   else resolve_teacher(args.distill_from))
    elif args.distill_weight > 0:
        raise ConfigError("distill_from", "--distill-weight > 0 needs a teacher "
                                          "(--distill-from ensemble, or a spec file)")
    if args.eval_split.lower() != "none":
        check_rerank_options(args.eval_depth, args.eval_cascade_run, args.eval_cascade,
                             args.concurrency, 4, 8)
    if args.model != "minilm" and not Path(args.model).exists():
        raise ConfigError("model", f"{args.model} is not a folder (models load offline: give a "
                                   "local HF folder, or 'minilm')")
    return spec, teacher


@one_line_errors()
def main(argv=None, prog: str = PROG):
    args = parse_args(argv, prog)
    setup_logging(verbose_flag=args.verbose)
    spec, distill_teacher = check_args(args)
    dataset = BeirDataset.from_dir(args.data)
    dataset.qrels_path(args.split)
    if args.eval_split.lower() != "none":
        dataset.qrels_path(args.eval_split)
    name = "minilm" if args.model == "minilm" else Path(args.model.rstrip("/")).name
    out = Path(args.out or f"outputs/teachers/cross-encoder-{name}")
    cache = None if args.cache.lower() == "none" else args.cache
    init_ray()
    start = time.perf_counter()

    groups = (out / "candidates" / f"{args.split}-{args.negatives_from}{args.depth}-"
              f"{args.sampling}{args.num_negatives}-seed{args.seed}.parquet")
    if groups.is_file():
        print(f"[train_teacher] reusing training groups {groups}")
    else:
        report, stage = mine_training_groups(
            dataset, args.split, groups, source=args.negatives_from, depth=args.depth,
            num_negatives=args.num_negatives, sampling=args.sampling, seed=args.seed,
            model=args.first_stage_model, embedding_cache=args.embedding_cache,
            concurrency=args.concurrency)
        print(f"[train_teacher] {report.summary()} ({report.seconds['total']:.0f}s)")
    train_input = groups
    if distill_teacher is not None:
        from raykd.teachers.bi_encoder import encode_teacher_corpus

        encode_teacher_corpus(distill_teacher, dataset.corpus_path, args.embedding_cache,
                              concurrency=args.concurrency)
        scored = score_training_groups(groups, out / "teacher_scores", distill_teacher, dataset,
                                       embedding_cache=args.embedding_cache, cache=cache,
                                       concurrency=args.concurrency)
        print(f"[train_teacher] distillation teacher {scored.fingerprint}: {scored.summary()}")
        train_input = scored.output_dir

    result = train_cross_encoder(train_input, out, spec, echo=print)
    print(f"[train_teacher] {result.steps} steps in {result.seconds['train']:.0f}s; loss "
          f"{result.first_loss:.4f} (first window) -> {result.last_loss:.4f} (last window)")
    print(f"[train_teacher] model: {result.model_dir}\n[train_teacher] teacher spec: "
          f"{result.teacher_spec}")
    if args.eval_split.lower() != "none":
        teacher = load_teacher_spec(result.teacher_spec)
        cascade = f"-cascade{args.eval_cascade}" if args.eval_cascade else ""
        eval_out = out / f"rerank-{args.eval_split}{cascade}"
        evaluation = rerank(dataset, args.eval_split, teacher, depth=args.eval_depth,
                            first_stage_model=args.first_stage_model,
                            cascade_run=args.eval_cascade_run, cascade_k=args.eval_cascade,
                            name=f"cross-encoder-{name}{cascade}", work_dir=eval_out / "work",
                            score_cache=cache, embedding_cache=args.embedding_cache,
                            concurrency=args.concurrency, echo=print)
        evaluation.save(eval_out)
        print(f"\n{Path(args.data).name} {args.split} -> {args.eval_split}: "
              f"{evaluation.info['protocol']}")
        print(format_table([evaluation]))
        print(f"\nrun and metrics written to {eval_out}/")
    print(f"[train_teacher] wall {time.perf_counter() - start:.0f}s")
    return result

