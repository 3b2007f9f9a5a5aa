"""Every default in one place (the API's keyword defaults and the CLI's options both read these): frozen
dataclasses, one per concept, in a module per area; change a default there and every entry point follows.
``from curate.defaults import X`` reads them all."""

from __future__ import annotations

from curate.defaults.llm import (  # noqa: F401
    BACKEND,
    BATCH,
    EVOL,
    JUDGE,
    NORMALIZER,
    TAG,
    BackendDefaults,
    BatchDefaults,
    EvolDefaults,
    JudgeDefaults,
    NormalizerDefaults,
    TagDefaults,
)
from curate.defaults.models import (  # noqa: F401
    DISTIL,
    EMBED,
    LESS,
    MINING,
    SCORER,
    SIGNAL,
    TRAIN,
    TRAIN_SCORER,
    DistilDefaults,
    EmbedDefaults,
    LessDefaults,
    MiningDefaults,
    ScorerDefaults,
    SignalDefaults,
    TrainDefaults,
    TrainScorerDefaults,
)
from curate.defaults.select import (  # noqa: F401
    ANN,
    DECONTAMINATE,
    DEITA,
    HEURISTICS,
    KMEANS,
    MINHASH,
    PLAN,
    SELECT,
    AnnDefaults,
    DecontaminateDefaults,
    DeitaDefaults,
    HeuristicDefaults,
    KMeansDefaults,
    MinHashDefaults,
    PlanDefaults,
    SelectDefaults,
)
from curate.defaults.workspace import (  # noqa: F401
    POOL,
    PROGRESS,
    REPORT,
    RUN,
    SCALE,
    WORKSPACE,
    PoolDefaults,
    ProgressDefaults,
    ReportDefaults,
    RunDefaults,
    ScaleDefaults,
    WorkspaceDefaults,
)
