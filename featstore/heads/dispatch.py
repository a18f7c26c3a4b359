"""What `featstore fit-head KIND` runs: one function for the command's four kinds of work.

A head kind (or `all`) is fitted by `fitting.fit_head`, `sweep` by `sweep.sweep`, either with
`--shots` by `fewshot.few_shot`, and `ensemble` by `ensemble.fit_ensemble`. The options that
belong to one of them are refused by the others with a one-line error naming the option.

Imports `heads` siblings (fitting, sweep, fewshot, ensemble, options, registry), `data.splits`,
`jobs`, `options` and `errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from featstore.data.splits import ShotOptions, SplitOptions
from featstore.errors import InvalidOptionError
from featstore.heads.ensemble import KIND as ENSEMBLE
from featstore.heads.ensemble import fit_ensemble
from featstore.heads.fewshot import FewShotResult, few_shot
from featstore.heads.fitting import fit_head
from featstore.heads.options import HeadConfig
from featstore.heads.registry import SWEEP
from featstore.heads.results import FitResult
from featstore.heads.sweep import SweepOptions, SweepResult, sweep
from featstore.jobs import JobOptions
from featstore.options import Options


def _refuse(kind: str, **given) -> None:
    """Raise InvalidOptionError for the first option in `given` that is set."""
    for param, value in given.items():
        if value:
            raise InvalidOptionError(param, f"is not an option of fit-head {kind}")


def _objects(objects: Sequence[Options]) -> dict[type, Options]:
    """The option objects by class; raises TypeError for another class or one given twice."""
    out: dict[type, Options] = {}
    for obj in objects:
        cls = type(obj)
        if cls not in OPTION_CLASSES or cls in out:
            raise TypeError(
                f"fit_heads takes one object of each of {[c.__name__ for c in OPTION_CLASSES]}, not {obj!r}"
            )
        out[cls] = obj.check()
    return out


#: The option objects `fit_heads` takes.
OPTION_CLASSES = (HeadConfig, SplitOptions, SweepOptions, ShotOptions, JobOptions)


def fit_heads(
    kind: str,
    features: Sequence[str] = (),
    *objects: Options,
    heads: Sequence[str] = (),
    use_augmented: bool = False,
    name: str | None = None,
    n_jobs: int = 2,
    log: Callable[[str], None] | None = None,
    progress: Callable[..., None] | None = None,
) -> list[FitResult] | SweepResult | FewShotResult | FitResult:
    """Run `featstore fit-head KIND`.

    Parameters
    ----------
    kind
        A head kind or `all` (`fit_head`, or `few_shot` with shots), `sweep` (`sweep`, or
        `few_shot` with shots) or `ensemble` (`fit_ensemble` of `heads`).
    features
        Feature sets `dataset@backbone` (not for ensemble: its members name theirs).
    *objects
        Option objects, each class at most once: `HeadConfig`, `SplitOptions`, `SweepOptions`
        (the grid and the ensemble size: sweep only), `ShotOptions` (with shots: few-shot
        curves instead of saved heads; not for ensemble), `JobOptions`.
    heads
        The saved heads an ensemble votes with (ensemble only).
    use_augmented
        Also train on augmented views (a kind or all, without shots).
    name, n_jobs, log, progress
        As the function that runs takes them.

    Returns
    -------
    list[FitResult] | SweepResult | FewShotResult | FitResult
        What the function that ran returns (a FitResult for an ensemble).

    Raises
    ------
    InvalidOptionError
        An option of another kind of work (`--heads` without ensemble, `--grid` without
        sweep, `--shots` with ensemble, `--features` with ensemble, `--repeats` without
        `--shots`, ...), and what the function that runs raises.
    """
    given = _objects(objects)
    sweep_options = given.get(SweepOptions, SweepOptions())
    shots = given.get(ShotOptions, ShotOptions())
    job = given.get(JobOptions, JobOptions())
    with_shots = bool(shots.shots)
    if not with_shots and shots.repeats != ShotOptions.repeats:
        raise InvalidOptionError("repeats", "counts the draws of each --shots value; give --shots too")
    if kind == ENSEMBLE:
        _refuse(kind, use_augmented=use_augmented)
        _refuse(
            kind,
            features=list(features),
            shots=with_shots,
            grid=sweep_options.grid,
            ensemble=sweep_options.ensemble,
        )
        return fit_ensemble(list(heads), name=name, job=job, log=log)
    _refuse(kind, heads=list(heads))
    common = {
        "head": given.get(HeadConfig),
        "split": given.get(SplitOptions),
        "job": job,
        "n_jobs": n_jobs,
        "log": log,
    }
    if with_shots:
        _refuse(f"{kind} --shots", name=name, use_augmented=use_augmented)
        return few_shot(kind, features, shots=shots, sweep=sweep_options, progress=progress, **common)
    if kind == SWEEP:
        _refuse(kind, use_augmented=use_augmented)
        return sweep(features, sweep=sweep_options, name=name, progress=progress, **common)
    _refuse(kind, grid=sweep_options.grid, ensemble=sweep_options.ensemble)
    return fit_head(kind, features, name=name, use_augmented=use_augmented, **common)
