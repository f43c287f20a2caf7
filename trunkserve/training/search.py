"""A study's search and choice: every task's candidates on its first seed(s), then the (budgeted) pick.

Split from ``training.pipeline`` (which finishes the chosen candidates and writes the heads) so
that the choice can be tested and replayed on recorded scores (``reports/search-seeds``) alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .jobs import TaskJobs
from .options import HeadOptions, PipelineError
from .prepare import Prepared
from .trials import Trial, candidates


@dataclass
class TaskSearch:
    """A task's data and the candidates trained on its first seed (on every seed with
    ``search_every_seed``), before the (budgeted) choice."""

    task: str
    opts: HeadOptions
    prep: Prepared
    trials: list[Trial]
    started: float
    custom: bool = False
    later: dict[int, list[Trial]] = field(default_factory=dict)  # seed -> every candidate, with search_every_seed

    def val(self, trial: Trial) -> float:
        """What the choice ranks ``trial`` by: its student's validation score, averaged over every searched seed.

        A few hundred validation rows make one seed's ranking noisy (on the capped
        study's 150 RTE rows a second student layer was worth 2, 18 and 2 points on
        seeds 0, 1, 2); the mean over seeds is steadier.
        """
        same = [t.student_val for t in (trial, *(self.on_seed(s, trial) for s in self.later))]
        return float(np.mean(same))

    def on_seed(self, seed: int, trial: Trial) -> Trial:
        """The candidate with ``trial``'s (k, n, m) as trained on a later searched ``seed``."""
        return next(t for t in self.later[seed] if (t.k, t.n, t.m) == (trial.k, trial.n, trial.m))


def search_task(jobs: TaskJobs, task: str) -> TaskSearch:
    """Every candidate of ``task`` on its first seed (every seed with ``search_every_seed``), wherever ``jobs`` runs them."""
    t0 = time.perf_counter()
    opts = jobs.task_opts[task]
    prep = jobs.prep(task)
    cands = candidates(opts, jobs.bb.config.num_hidden_layers)
    trials = jobs.trials(task, opts.seeds[0], cands)
    later = {seed: jobs.trials(task, seed, cands) for seed in opts.seeds[1:]} if opts.search_every_seed else {}
    return TaskSearch(task, opts, prep, trials, t0, custom=jobs.is_custom(task), later=later)


def merged_layers(choice: dict[str, tuple[int, int]]) -> int:
    """Layers one input passes through in the merged model: the trunk to its deepest branch once, plus every head."""
    return max(k for k, _ in choice.values()) + sum(m for _, m in choice.values()) if choice else 0


def choose(searches: dict[str, TaskSearch], num_layers: int, layer_budget: float | None = None) -> dict[str, Trial]:
    """Per task the trial to serve: the best student on validation (``TaskSearch.val``), or, with ``layer_budget``
    (a fraction of one full model per task), the combination with the highest summed
    validation score whose merged layer cost fits the budget.

    The cost couples the tasks (the trunk runs to the deepest branch any head uses, and
    every head adds its layers), so the choice is made jointly: a dynamic programme
    over tasks whose state is (deepest branch, head layers so far).
    """
    if layer_budget is None:
        return {t: max(s.trials, key=s.val) for t, s in searches.items()}
    limit = layer_budget * num_layers * len(searches)
    states: dict[tuple[int, int], tuple[float, dict[str, Trial]]] = {(0, 0): (0.0, {})}
    for task, search in searches.items():
        nxt: dict[tuple[int, int], tuple[float, dict[str, Trial]]] = {}
        for (deep, heads), (score, picked) in states.items():
            for trial in search.trials:
                key = (max(deep, trial.k), heads + trial.m)
                if key[0] + key[1] > limit:
                    continue
                cand = (score + search.val(trial), {**picked, task: trial})
                if key not in nxt or cand[0] > nxt[key][0]:
                    nxt[key] = cand
        states = nxt
    if not states:
        cheapest = {t: min(s.trials, key=lambda x: (x.k, x.m)) for t, s in searches.items()}
        cost = merged_layers({t: (x.k, x.m) for t, x in cheapest.items()})
        raise PipelineError(
            f"no choice of heads fits the layer budget {layer_budget:.0%} ({limit:.1f} layers): the cheapest needs "
            f"{cost} of {num_layers * len(searches)}")
    return max(states.values(), key=lambda v: v[0])[1]
