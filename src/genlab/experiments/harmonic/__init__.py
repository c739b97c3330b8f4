"""Reproduce the Lipschitz tables of "VAEs: a harmonic perspective" (Camuto & Willetts, arXiv 2105.14866).

    python -m genlab.experiments.harmonic --profile smoke|full [--datasets ...] [--seeds ...]
                                          [--out results/harmonic] [--cache DIR] [--defects]

Two sweeps of the sigmoid MLP VAE (genlab.models.harmonic) per dataset and seed:
- ``sigma_enc`` in {1.0, 0.5, 0.1}, no input noise: the decoder's Lipschitz constant should fall as
  sigma_enc grows;
- ``sigma_n`` in {1.0, 0.5, 0.0} with sigma_enc = 0.5: the encoder's constant should fall as the
  input-noise std sigma_N grows.
Every trained network gets three estimates (Jacobian lower bound <= LipSDP-neuron <= product of
spectral norms) and, for comparison, ECLipsE-Fast (a closed-form upper bound), each timed; tables
of mean +- std over seeds go to ``<out>/<profile>/`` beside the paper's and the 2022 reproduction's
numbers, with a verdict on each predicted trend. The maximum-damage attack runs on the
sigma_enc = 1.0 image model; ``--defects`` re-creates the 2022 report's mistakes.
Checkpoints live in ``<cache>/<profile>/`` (default ``~/.cache/genlab/harmonic``) and are reused when their
config matches; so are the estimates kept beside them.

The package's modules, in the order a run uses them: ``plan`` (what a profile trains), ``data``,
``training`` (the checkpoint cache), ``estimates`` (the four Lipschitz estimators), ``grid``,
``tables``, ``attack``, ``defects``, ``sinc_study`` and ``cli``. Their public names are
importable from here.
"""

from genlab.experiments.harmonic.attack import (
    attack_markdown,
    attack_pair,
    attack_table,
    attack_target,
    log_likelihood_degradation,
    run_attack,
)
from genlab.experiments.harmonic.cli import default_cache, main, write_provenance
from genlab.experiments.harmonic.data import Dataset, load_dataset
from genlab.experiments.harmonic.defects import DEFECT_TEXT, defect_tables, defects_markdown, run_defects
from genlab.experiments.harmonic.estimates import (
    Bounds,
    cached_estimate,
    check_order,
    estimate,
    probe_points,
    with_relu,
)
from genlab.experiments.harmonic.grid import GridResult, run_grid
from genlab.experiments.harmonic.plan import (
    ALL,
    ESTIMATORS,
    LABELS,
    LATENT,
    NETWORK,
    ORDER_TOLERANCE,
    PUBLISHED,
    SIGMA_ENC_RIGHT,
    SWEEPS,
    SYMBOL,
    TITLES,
    Plan,
    comparable,
    data_title,
    make_plan,
    torch_threads,
    with_plan_threads,
)
from genlab.experiments.harmonic.sinc_study import (
    SINC_STUDY_COLUMNS,
    SINC_STUDY_CSV,
    SINC_VARIANTS,
    SincVariant,
    decoder_measures,
    encoder_measures,
    find_sinc_encoder_csv,
    linf_lower_bound,
    load_sinc_encoder_rows,
    sinc_encoder_markdown,
    sinc_encoder_study,
    sinc_encoder_table,
    sinc_study_provenance,
    sinc_value_sse,
    sinc_variant_data,
    sinc_variant_step,
)
from genlab.experiments.harmonic.tables import (
    constants_figure,
    constants_tables,
    cost_markdown,
    cost_table,
    fmt,
    lipschitz_markdown,
    lipschitz_tables,
    mean_std,
    published_table,
    read_rows,
    summarise,
    trend_verdict,
    trends,
    trends_table,
    write_tables,
)
from genlab.experiments.harmonic.training import (
    StepFn,
    checkpoint_path,
    estimates_path,
    run_config,
    train_model,
    train_or_load,
)

__all__ = [
    "ALL",
    "ESTIMATORS",
    "LABELS",
    "LATENT",
    "NETWORK",
    "ORDER_TOLERANCE",
    "PUBLISHED",
    "Plan",
    "SIGMA_ENC_RIGHT",
    "SWEEPS",
    "SYMBOL",
    "TITLES",
    "comparable",
    "data_title",
    "make_plan",
    "torch_threads",
    "with_plan_threads",
    "Dataset",
    "load_dataset",
    "StepFn",
    "checkpoint_path",
    "estimates_path",
    "run_config",
    "train_model",
    "train_or_load",
    "Bounds",
    "cached_estimate",
    "check_order",
    "estimate",
    "probe_points",
    "with_relu",
    "GridResult",
    "run_grid",
    "constants_figure",
    "constants_tables",
    "cost_markdown",
    "cost_table",
    "fmt",
    "lipschitz_markdown",
    "lipschitz_tables",
    "mean_std",
    "published_table",
    "read_rows",
    "summarise",
    "trend_verdict",
    "trends",
    "trends_table",
    "write_tables",
    "attack_markdown",
    "attack_pair",
    "attack_table",
    "attack_target",
    "log_likelihood_degradation",
    "run_attack",
    "DEFECT_TEXT",
    "defect_tables",
    "defects_markdown",
    "run_defects",
    "SINC_STUDY_COLUMNS",
    "SINC_STUDY_CSV",
    "SINC_VARIANTS",
    "SincVariant",
    "decoder_measures",
    "encoder_measures",
    "find_sinc_encoder_csv",
    "linf_lower_bound",
    "load_sinc_encoder_rows",
    "sinc_encoder_markdown",
    "sinc_encoder_study",
    "sinc_encoder_table",
    "sinc_study_provenance",
    "sinc_value_sse",
    "sinc_variant_data",
    "sinc_variant_step",
    "default_cache",
    "main",
    "write_provenance",
]
