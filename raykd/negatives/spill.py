"""Sampled plans spilled to disk between mining's passes, and the texts of their passages.

Mining ranks and samples one query chunk at a time and appends the plans (``{qid, pids,
labels, kinds, ranks}``, no texts) to a JSONL spill file; one corpus stream then fetches the
texts of the chosen pids into a `PlanTexts` actor (in the driver without Ray), and the writer
reads the plans back a chunk at a time. The driver never holds more than one chunk of plans.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

from raykd.negatives.mining import fetch_passage_texts

TextLookup = Callable[[Collection[str]], dict[str, str]]


class PlanSpill:
    """An append-only JSONL file of plans."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, plans: Iterable[dict]) -> int:
        """Append plans; returns how many."""
        n = 0
        with open(self.path, "a", encoding="utf-8") as out:
            for plan in plans:
                out.write(json.dumps(plan, ensure_ascii=False) + "\n")
                n += 1
        return n

    def __iter__(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line)

    def chunks(self, size: int) -> Iterator[list[dict]]:
        """The plans in order, `size` at a time."""
        plans = iter(self)
        while chunk := list(islice(plans, size)):
            yield chunk

    def pids(self) -> set[str]:
        """Every pid the plans chose."""
        return {pid for plan in self for pid in plan["pids"]}


class PlanTexts:
    """The passage texts of a spill's pids, fetched in one corpus stream (a Ray actor, so the
    texts of every chosen passage live outside the driver)."""

    def __init__(self, corpus_path: str, spill_path: str, use_ray: bool | None = None):
        self.texts = fetch_passage_texts(corpus_path, PlanSpill(spill_path).pids(),
                                         use_ray=use_ray)

    def get(self, pids: Collection[str]) -> dict[str, str]:
        """``{pid: text}`` for the pids found."""
        return {p: self.texts[p] for p in pids if p in self.texts}


@contextmanager
def plan_texts(corpus_path, spill: PlanSpill, use_ray: bool | None = None
               ) -> Iterator[TextLookup]:
    """``lookup(pids) -> {pid: text}`` over the spill's chosen passages."""
    import ray

    if not (ray.is_initialized() if use_ray is None else use_ray):
        yield PlanTexts(str(corpus_path), str(spill.path), use_ray=False).get
        return
    from raykd.index.search import on_this_node

    # No CPU reserved: its corpus stream runs as Ray Data read tasks that need the CPUs.
    actor = ray.remote(num_cpus=0)(PlanTexts).options(
        scheduling_strategy=on_this_node()).remote(str(corpus_path), str(spill.path), True)
    try:
        ray.get(actor.get.remote([]))  # the texts are fetched (texts time ends here)
        yield lambda pids: ray.get(actor.get.remote(list(pids)))
    finally:
        ray.kill(actor)
