"""The searcher: an Optuna sampler (TPE by default) over a `SearchSpace`, told the truth about
early-stopped trials.

Ray's `OptunaSearch` tells the study COMPLETE with a trial's *last* result, so a trial that ASHA
stopped after one epoch would enter TPE (and the study's `best_trial`) with its epoch-1 score as if
it were a full run. Here:

- every evaluation is an intermediate value of the Optuna trial at step = the optimizer steps
  trained so far (`M.STEP`; the epoch only for a result without it), so evaluations within an
  epoch get steps of their own;
- a trial that ended on its own (its last result has `finished`, see `rundir.trials.final_status`)
  is COMPLETE with its *best* level-2 macro-F1, the value the leaderboard ranks by;
- a trial the scheduler stopped is PRUNED (Optuna then takes its last intermediate value);
- a trial that errored is FAIL.

So the study and the leaderboard agree on trials, states and best. `suggest` also returns the
Optuna trial number and warm-start name with the parameters, for the leaderboard.

OptunaSearch's private state (its study, asked and told trials) is reached through
search/internals.py only.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from model import metrics as M
from model.errors import ConfigError
from rundir import keys as K
from rundir.settings import AUTO_GP_MAX_TRIALS, SAMPLERS
from rundir.trials import COMPLETED, final_status
from search import internals
from spaces.space import SearchSpace

log = logging.getLogger(__name__)

MAX_DUPLICATE_ASKS = 100


def startup_trials(num_samples: int, warm_starts: int, requested: int | None = None) -> int:
    """Random trials before a model-based sampler takes over. Optuna's default (10) made the demo's
    12-trial search 10 random trials and 2 TPE ones: by default about 15% of the budget, at least
    2 and at most Optuna's 10, and never fewer than the warm starts (they are the first trials)."""
    if requested is not None:
        return requested
    return max(warm_starts, min(10, max(2, math.ceil(0.15 * num_samples))))


def resolve_sampler(name: str, space: SearchSpace, num_samples: int) -> str:
    """`auto`: a GP for a space of numbers alone (no choices, nothing conditional) searched for at
    most AUTO_GP_MAX_TRIALS trials, else multivariate TPE with constant liar, which models
    categorical and conditional parameters per branch. Other names are returned as given."""
    if name != "auto":
        return name
    params = [p for p in space.params if p.searched]
    numeric = all(p.kind in ("float", "int") and not p.when for p in params)
    return "gp" if params and numeric and num_samples <= AUTO_GP_MAX_TRIALS else "tpe"


def make_sampler(name: str = "tpe", *, seed: int, n_startup_trials: int = 10) -> optuna.samplers.BaseSampler:
    """One of Optuna's samplers. TPE with constant_liar (parallel asks see running trials as bad,
    so concurrent trials spread out) and grouped multivariate sampling (conditional parameters are
    modelled per branch). `auto` must be resolved first (`resolve_sampler`)."""
    if name not in SAMPLER_FACTORIES:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)} (`auto` is resolved "
                          "before a sampler is made)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLER_FACTORIES[name](seed, n_startup_trials)


# --sampler's names are SAMPLERS' (rundir/settings.py, free of Optuna for the command line), `auto` aside.
SAMPLER_FACTORIES: dict[str, Callable[[int, int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed, startup: optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True,
                                                            group=True, n_startup_trials=startup),
    "random": lambda seed, startup: optuna.samplers.RandomSampler(seed=seed),
    "gp": lambda seed, startup: optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup),
    "qmc": lambda seed, startup: optuna.samplers.QMCSampler(seed=seed, scramble=True),
    # CMA-ES models numbers only; choices and conditional parameters are sampled at random.
    "cmaes": lambda seed, startup: optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup,
                                                                warn_independent_sampling=False),
}
if set(SAMPLER_FACTORIES) != set(SAMPLERS) - {"auto"}:  # a name added in one place only
    raise ImportError(f"rundir.settings.SAMPLERS {SAMPLERS} and SAMPLER_FACTORIES {tuple(SAMPLER_FACTORIES)} differ")


class FidelityAwareOptunaSearch(OptunaSearch):
    """`warm_start=False` when resuming: the points were queued by the launch."""

    def __init__(self, space: SearchSpace, *, storage: optuna.storages.BaseStorage, study_name: str,
                 seed: int, sampler: str = "tpe", n_startup_trials: int = 10, warm_start: bool = True):
        super().__init__(space.sample, metric=K.OBJECTIVE, mode="max", study_name=study_name, storage=storage,
                         sampler=make_sampler(sampler, seed=seed, n_startup_trials=n_startup_trials))
        self._reopened: dict[str, int] = {}  # Ray trial id -> storage id of its replacement Optuna trial
        self.exhausted = False  # the duplicate guard found nothing new to propose: the search ended
        if warm_start:
            # Warm-start points go first, named so the leaderboard can show which is which.
            for name, point in space.warm_start.items():
                self.study.enqueue_trial(point, user_attrs={K.WARM_START: name})

    def restore(self, checkpoint_path: str) -> None:
        """OptunaSearch.restore, except that the searcher stays on this driver's study (the study.db
        of the resumed RUN_DIR, wherever the run has moved since its launch) with the restored
        sampler: the pickled state names the study.db of the launch location."""
        reopened = self._reopened  # this driver's, not one pickled by an earlier driver
        internals.restore_searcher(self, checkpoint_path)
        self._reopened = reopened
        for trial_id, storage_id in reopened.items():
            internals.asked_trials(self)[trial_id] = internals.trial_handle(self.study, storage_id)
            internals.told_trials(self).discard(trial_id)
        self.reconcile()

    def reopen(self, numbers: dict[str, int]) -> dict[str, int]:
        """Give errored Ray trials (id -> their FAIL'd Optuna trial number) a fresh RUNNING Optuna
        trial with the same parameters and intermediate values, which the retried Ray trial will
        finish: Optuna cannot change the state of a finished trial. Call before the Tuner starts;
        returns {Ray trial id: new Optuna number}. The old trials stay FAIL in the study."""
        new_numbers = {}
        for trial_id, number in numbers.items():
            old = self.study.trials[number]
            self.study.add_trial(optuna.trial.create_trial(
                state=TrialState.RUNNING, params=old.params, distributions=old.distributions,
                user_attrs={**old.user_attrs, "retry_of": number}, intermediate_values=old.intermediate_values))
            new = self.study.get_trials(deepcopy=False)[-1]  # only this driver writes the study
            self._reopened[trial_id] = internals.storage_id(new)
            new_numbers[trial_id] = new.number
        return new_numbers

    def reconcile(self, *, final: bool = False) -> list[int]:
        """Fail the Optuna trials left RUNNING that no Ray trial will finish; return their numbers.

        Optuna's heartbeat does not run under ask/tell, so a killed driver leaves RUNNING trials in
        the study. After a restore, a RUNNING trial this searcher did not hand to a (restored) Ray
        trial was asked after the last experiment snapshot: Ray never recorded it, so it is lost
        and told FAIL. It is not queued again: the sampler, restored to its state at the snapshot,
        proposes the same configuration again by itself. With `final`, at the end of a finished
        search, every RUNNING trial is failed.
        """
        told = internals.told_trials(self)
        live = {t.number for tid, t in internals.asked_trials(self).items() if tid not in told}
        lost = []
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number in live and not final:
                continue
            self.study.tell(frozen.number, state=TrialState.FAIL)
            log.warning("Optuna trial %d was left RUNNING by an interrupted driver and no Ray trial holds it: "
                        "marked FAIL", frozen.number)
            lost.append(frozen.number)
        return lost

    @property
    def study(self) -> optuna.Study:
        return internals.study(self)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next configuration, never one already trained or training (the duplicate guard).

        Discrete spaces make samplers propose a configuration again (users of Optuna on clusters
        report 10-20% of trials). A proposal equal to a COMPLETE trial's parameters is told COMPLETE
        with that trial's value (the sampler learns what it would have learnt, and nothing is
        trained twice); one equal to a trial in flight is told FAIL (the sampler ignores it). Either
        gets the user attribute `duplicate_of` (the earlier trial's number), and the sampler is asked
        again. Pruned trials stopped below the full budget, so their configuration may run again.
        After MAX_DUPLICATE_ASKS duplicates in a row the space is taken as exhausted: the search ends.
        """
        asked = internals.asked_trials(self)
        for _ in range(MAX_DUPLICATE_ASKS):
            params = super().suggest(trial_id)
            if params is None:
                return None
            ot_trial = asked[trial_id]
            earlier = self._trained_equal(ot_trial)
            if earlier is None:
                return {K.PARAMS: params, K.OPTUNA_NUMBER: ot_trial.number,
                        K.WARM_START: ot_trial.user_attrs.get(K.WARM_START)}
            ot_trial.set_user_attr(K.DUPLICATE_OF, earlier.number)
            if earlier.state == TrialState.COMPLETE:
                self.study.tell(ot_trial, earlier.value)
            else:
                self.study.tell(ot_trial, state=TrialState.FAIL)
            log.info("Optuna trial %d repeats trial %d's configuration: not trained, asking again",
                     ot_trial.number, earlier.number)
            del asked[trial_id]
        log.warning("the sampler proposed only configurations already trained or training (%d in a row): "
                    "the space looks exhausted, so the search ends", MAX_DUPLICATE_ASKS)
        self.exhausted = True
        return Searcher.FINISHED

    def _trained_equal(self, ot_trial: optuna.Trial) -> FrozenTrial | None:
        """The earliest other trial with `ot_trial`'s parameters that completed or is in flight."""
        told = internals.told_trials(self)
        live = {t.number for tid, t in internals.asked_trials(self).items() if tid not in told}
        params = ot_trial.params
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if frozen.number == ot_trial.number or frozen.params != params:
                continue
            if frozen.state == TrialState.COMPLETE or frozen.number in live:
                return frozen
        return None

    def _report(self, trial_id: str, result: dict[str, Any] | None) -> None:
        if result and self.metric in result and M.EPOCH in result:
            # Optuna ignores (with a warning) a step reported twice, e.g. by a retried trial.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                step = int(result.get(M.STEP, result[M.EPOCH]))
                internals.asked_trials(self)[trial_id].report(float(result[self.metric]), step)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in internals.told_trials(self):
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        told, asked = internals.told_trials(self), internals.asked_trials(self)
        if trial_id in told or trial_id not in asked:
            return
        ot_trial = asked[trial_id]
        # Ray hands the last result to on_trial_complete only, so record it here too.
        self._report(trial_id, result)
        if error:
            state, value = TrialState.FAIL, None
        elif final_status(result) == COMPLETED:
            state, value = TrialState.COMPLETE, float(result[M.BEST_LEVEL2_MACRO_F1])
        else:
            state, value = TrialState.PRUNED, None
        try:
            self.study.tell(ot_trial, value, state=state)
        except (ValueError, RuntimeError) as err:  # e.g. already finished in a restored study
            log.warning("could not tell Optuna trial %s (%s): %s", ot_trial.number, state.name, err)
        told.add(trial_id)
