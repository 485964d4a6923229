"""How an evaluation runs, as one frozen object: :class:`EvaluationConfig`.

:func:`calm.evaluate` and :func:`calm.evaluation.protocol.evaluate_features` take one (``config=``)
or build it from their keyword arguments (:func:`calm.config.configured`); the CLI builds one from
its flags; every report embeds it (``report.json``'s ``config.evaluation``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from calm.errors import InputError


@dataclass(frozen=True)
class EvaluationConfig:
    """How an evaluation runs (everything but the model or features, the items, the prompt and the store).

    Attributes:
        shots: support sizes per class.
        seeds: number of seeds (0..n-1) or the seeds themselves.
        methods: registered method names (None: every feature method, see :mod:`calm.methods`).
        task: ``multiclass``, ``spoof`` or ``multilabel`` (None: detected from the labels).
        query_fold: hold out this fold as the query for every seed (None: the dataset's split, or
            folds rotating with the seed; see :mod:`calm.data.episodes`).
        params: method name -> parameters overriding its defaults (e.g. ``{"calm": {"tau": 0.1}}``).
        trust: also calibrate each method on its support and report calibration, prediction-set
            and open-set metrics (:mod:`calm.evaluation.trust`; not for multilabel tasks).
        workers: processes that fit episodes in parallel (None: as many as there are cores, when
            the fits would take long enough to repay starting them; :mod:`calm.evaluation.workers`).
            The report is the same whatever the count.
        batch_size: clips per forward pass, for the features and the model's answers (:func:`calm.evaluate`).
        zero_shot, pseudo_label: :func:`calm.evaluate` adds (True) or leaves out (False) the method
            of that name whatever ``methods`` says (None: as ``methods`` says); on a backbone that
            answers no questions they are skipped with a note either way.
        answer_template: the question the model is asked (None: by task, see
            :func:`~calm.evaluation.zeroshot.answer_prompt`).
        samples, temperature: sampled answers per support clip for the pseudo-labels.
        max_new_tokens: answer length limit.
    """

    shots: tuple[int, ...] = (1, 5)
    seeds: int | tuple[int, ...] = 5
    methods: tuple[str, ...] | None = None
    task: str | None = None
    query_fold: str | None = None
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    trust: bool = True
    workers: int | None = 1
    batch_size: int = 8
    zero_shot: bool | None = True
    pseudo_label: bool | None = True
    answer_template: str | None = None
    samples: int = 5
    temperature: float = 1.0
    max_new_tokens: int = 16

    def __post_init__(self) -> None:
        for name in ("shots", "methods") + (("seeds",) if not isinstance(self.seeds, int) else ()):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value) if name != "methods" else tuple(value))
        object.__setattr__(self, "params", {name: dict(p) for name, p in (self.params or {}).items()})
        if self.workers is not None and self.workers < 1:
            raise InputError(f"workers must be at least 1, got {self.workers}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {self.batch_size}")

    def seed_list(self) -> list[int]:
        """The seeds themselves."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def switches(self) -> dict[str, bool | None]:
        """Method name -> add (True), leave out (False) or as ``methods`` says (None)."""
        return {"zero-shot": self.zero_shot, "pseudo-label": self.pseudo_label}

    def to_dict(self) -> dict[str, Any]:
        """Every field but ``workers`` (the report is the same for every count), JSON-ready: what
        reports embed."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()
                if name != "workers"}
