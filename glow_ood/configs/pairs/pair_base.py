"""Building blocks of the pair configs: one in-distribution set, one or more OOD sets.

A pair config holds one complete training config (the schema of
glow_ood/configs/common.py) per model: `glow` (affine couplings), `cv_glow`
(additive couplings, constant volume), `pixelcnn` (PixelCNN++) and `vae`, each
trained in workdir/<model> on the same data, plus an `experiment` block saying
what to evaluate and analyse (experiment.models: which of them to run). Every
key can be overridden from the command line, e.g. --config.vae.train.num_steps=500.

Evaluation never augments (glow_ood.eval_sets sets
augment='none'), and every evaluation set is shaped like the training data
(image size and channels), so a grey set paired with an RGB model would be
repeated to RGB and an RGB set paired with a grey model converted to luma.
"""
import ml_collections

from glow_ood import model_kinds
from glow_ood.configs import common
from glow_ood.configs import tiny
from glow_ood.eval_sets import eval_block

# The models a pair config trains, each a block of the config by this name: its model
# kind and the module fields set over the kind's own (glow_ood.model_kinds; the kind
# names it in the report). A fifth model is one more entry.
ROSTER = {
    'glow': ('glow', {'coupling': 'affine'}),
    'cv_glow': ('glow', {'coupling': 'additive'}),  # constant volume
    'pixelcnn': ('pixelcnn', {}),
    'vae': ('vae', {}),
}
MODELS = tuple(ROSTER)


def names(model: str) -> tuple[str, str]:
  """(title, description) of a pair model, e.g. ('CV-Glow', 'CV-Glow (additive ...)')."""
  kind, fields = ROSTER[model]
  return model_kinds.KINDS[kind].names(fields)

VARIANTS = ('tiny', 'quick', 'paper')


def experiment_block(ood) -> ml_collections.ConfigDict:
  """What the experiment evaluates and analyses; sizes are images per data set.

  ood: the OOD test sets, (data set name, split) pairs; the first is the report's
  headline set.
  """
  exp = ml_collections.ConfigDict()
  # OOD test sets: evaluation blocks (glow_ood.eval_sets) keyed by the set's label,
  # e.g. --config.experiment.ood.mnist.data.path=/data/mnist.npz.
  exp.ood = ml_collections.ConfigDict()
  for name, split in ood:
    exp.ood[name] = eval_block(name, split)
  exp.headline_ood = ood[0][0]         # the OOD set the report's summary is about
  exp.models = 'glow,cv_glow,pixelcnn,vae'  # which to train and report (the paper's Figure 3)
  exp.train_examples = 0               # in-distribution train subset; 0 = whole split
  exp.test_examples = 0                # in-distribution test subset; 0 = whole split
  exp.ood_examples = 0                 # per OOD set; 0 = whole split
  # Figure 5: every kept checkpoint evaluated on subsets of this size.
  exp.curve_models = 'glow,cv_glow'
  exp.curve_examples = 2_000
  # Section 5.
  exp.stats_examples = 10_000          # images per set for pixel statistics; 0 = all evaluated
  exp.hutchinson_probes = 256          # Rademacher probes for the diagonal trace term
  exp.sample_trace_examples = 1_000    # images per set for the full-covariance trace; 0 = off
  exp.hvp_chunk = 16                   # HVPs evaluated together (memory vs speed)
  exp.graying_alphas = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
  exp.graying_examples = 2_000         # images per set
  # Beyond the paper: the typicality test on batches of these sizes (1 = per image).
  exp.typicality_batch_sizes = (1, 10)
  # OOD scores beyond log p(x) (glow_ood.scores), fitted on the train subset only.
  # WAIC: models per ensemble, the model itself plus (size - 1) more seeds, each in
  # workdir/<model>_seed<k>; < 2 = off (it costs size - 1 extra trainings per model).
  exp.ensemble_size = 0
  exp.ensemble_models = 'glow,cv_glow,pixelcnn,vae'  # which models get the extra seeds
  exp.compressors = 'png,jpeg2000'     # input complexity, one score per compressor
  # Stress suite: the in-distribution test subset shifted (glow_ood.analysis.stress),
  # and synthetic sets, each scored as an OOD set; '' = off.
  exp.stress = ('rotate90,rotate180,flip_horizontal,flip_vertical,shift1,shift2,shift4,'
                'contrast0.5,contrast2,brightness-64,brightness+64,invert,noise4,noise16,'
                'noise64,uniform_noise,constant')
  exp.stress_examples = 1_000          # test images transformed per stress set; 0 = all
  # Corruption suite (glow_ood.analysis.corruptions: the 15 of MNIST-C), each at every
  # listed severity (1 mild .. 5 severe), on the first corruption_examples test images.
  exp.corruptions = ('shot_noise,impulse_noise,glass_blur,motion_blur,shear,scale,rotate,'
                     'brightness,translate,stripe,fog,spatter,dotted_line,zigzag,canny_edges')
  exp.corruption_severities = (1, 3, 5)
  exp.corruption_examples = 1_000
  # The report's headline detector (a score name, glow_ood.scores), declared here before
  # any OOD set is seen; every model quotes its AUROC. 'combined' is two-sided and
  # fitted on the train subset alone.
  exp.detector = 'combined'
  exp.bootstrap_resamples = 1_000      # per AUROC, for its 95% interval; 0 = no intervals
  exp.histogram_bins = 60
  exp.reuse_evaluations = True         # keep eval/*.npz already written for a checkpoint
  return exp


def make_pair_config(pair: str, variant: str, glow: ml_collections.ConfigDict,
                     ood) -> ml_collections.ConfigDict:
  """The pair config; `glow` is a complete affine-Glow training config."""
  if variant not in VARIANTS:
    raise ValueError(f'Unknown variant {variant!r} for pair {pair!r}; choose one of {VARIANTS}.')
  glow = common.copy_keeping_types(glow)
  glow.train.keep_checkpoints = max(glow.train.keep_checkpoints, 100)  # Figure 5 needs them
  # A model's own --mode=evaluate default: its test split (the experiment plans the rest).
  name = glow.data.name
  glow.evals = ml_collections.ConfigDict({f'{name}_test': eval_block(name, 'test')})
  config = ml_collections.ConfigDict()
  config.pair = pair
  config.variant = variant
  # The paper's Figure 3 models, on the same data; Glow's size is the given config's, the
  # other kinds' the variant's.
  for model, (kind, fields) in ROSTER.items():
    model_config = common.copy_keeping_types(glow)
    if kind != 'glow':
      model_config = common.with_kind(model_config, kind, variant)
    model_config.model.update(fields)
    config[model] = model_config
  config.background = background_block(variant)
  config.experiment = experiment_block(ood)
  config.experiment.attacks = attack_block(variant)
  if variant == 'paper':
    config.experiment.ensemble_size = 5  # WAIC as Choi et al. (5 seeds per model)
  return config


def model_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """Every model's training config in a pair config (to change what they share)."""
  return [config[name] for name in MODELS]


def attack_block(variant: str = 'quick') -> ml_collections.ConfigDict:
  """The attack block of a pair config (config.experiment.attacks); sizes are images per set."""
  cfg = ml_collections.ConfigDict()
  cfg.enabled = True                 # the pair pipeline skips the section when False
  cfg.examples = 32                  # in-distribution test images, and per OOD set
  cfg.epsilons = (1, 2, 4, 8)        # 8-bit levels (2 = 2/255) for raising and lowering
  cfg.headline_epsilon = 2           # levels for the target and evasion attacks, and the figure
  cfg.evasion_examples = 0           # images per set in each score's evasion; 0 = examples
  cfg.num_steps = 8                  # signed-gradient steps per attack
  cfg.noise_draws = 1                # dequantization draws averaged per gradient step
  cfg.batch_size = 64                # images attacked (and re-evaluated) together
  cfg.figure_examples = 3            # images per set shown in the figure
  cfg.bootstrap_resamples = 1000     # resamples of each attack AUROC's 95% interval
  # OOD scores (glow_ood.scores names, comma-separated) whose evasion is attacked; '' = every
  # score that applies. Each adds 2 x evasion_examples attacked images per model.
  cfg.scores = ('log p(x),typicality,likelihood ratio,input complexity (PNG),level ratio,'
                'DoSE (KDE),DoSE (Gaussian),combined,WAIC')
  if variant == 'quick':
    # 256 images a side everywhere (the table and every score's evasion), so that each
    # AUROC's interval is informative. At the earlier 8 steps and four radii that is 65,536
    # attacked image-steps per model, 10x the 32-image block before it (6,400) and far
    # too slow beside a ~40-minute run on 2 CPU cores, so the steps and radii are cut
    # instead of the images: 4 steps (the step still decays from 4*eps/T, a path ~2*eps
    # long) and eps 2 and 8 levels: 24,576 image-steps (2 sets x 5 rows x 256 + 7 scores x
    # 2 x 256, x 4 steps), only the likelihood ratio's rows running the background model.
    # Timed on untrained quick-size models, 2 shared CPU cores: Glow 261 s (232 CPU-s),
    # CV-Glow 174 s, against 179 s (120 CPU-s) for the old block on the same machine.
    cfg.examples = 256
    cfg.epsilons = (2, 8)
    cfg.num_steps = 4
  if variant == 'tiny':
    cfg.examples = 6
    cfg.epsilons = (2, 8)
    cfg.num_steps = 4
    cfg.batch_size = 8
    cfg.figure_examples = 2
    cfg.bootstrap_resamples = 200
  elif variant == 'paper':
    cfg.examples = 256
    cfg.num_steps = 50
    cfg.noise_draws = 4
    cfg.batch_size = 128
    cfg.figure_examples = 4
  elif variant != 'quick':
    raise ValueError(f'Unknown variant {variant!r}; choose tiny, quick or paper.')
  return cfg


def background_block(variant: str = 'paper') -> ml_collections.ConfigDict:
  """The likelihood-ratio background models (Ren et al. 2019).

  Each model listed gets one in workdir/<model>_background: its own training
  config (so every --config.<model>.* override applies to it too) with a
  fraction mu of training pixel values made uniform, and L2 regularisation.
  Ren et al. tune mu on in-distribution validation data; so does the pipeline,
  from `mutation_rates`, without any test or OOD image
  (glow_ood.experiment.background_tuning): each candidate trains
  `selection_steps` steps in workdir/<model>_background_mu<mu>, the one whose
  ratio best separates the train subset from copies of it with a
  `validation_perturbation` fraction of pixel values made uniform is copied to
  workdir/<model>_background and trained on to num_steps. A one-value grid is
  a fixed mu, not tuned. The L2 coefficient is fixed.
  """
  background = ml_collections.ConfigDict()
  background.models = 'glow,cv_glow'   # '' = no likelihood ratio
  # Candidate mutation rates (fraction of pixel values replaced); one value = fixed, no tuning.
  background.mutation_rates = (0.05, 0.15, 0.3)
  # Steps each candidate trains before the selection (the chosen one then resumes to
  # num_steps); 0 = every candidate to num_steps, as published.
  background.selection_steps = 0 if variant == 'paper' else 300
  # The selection's positives: train-subset images with this fraction of pixel values
  # made uniform (seeded; never a test or OOD image). Small on purpose: on the quick
  # FashionMNIST Glow (candidates at 300 steps) 0.03 and 0.1 give every candidate AUROC
  # 1.000 (a tie, so no tuning); 0.005 gave 0.93 / 0.90 / 0.88 for mu 0.05 / 0.15 / 0.3.
  background.validation_perturbation = 0.005
  background.validation_examples = 0 if variant == 'paper' else 1_000  # train subset; 0 = all
  background.weight_decay = 1e-4       # L2 coefficient (train.weight_decay)
  background.num_steps = 0             # training steps; 0 = as many as its model
  return background


def tiny_model(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A training config shrunk to a seconds-long smoke run (tests, CI)."""
  config = tiny.shrink(config)
  config.train.num_steps = 6
  config.train.checkpoint_every = 3
  return config


def tiny_experiment(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  exp = config.experiment
  exp.train_examples = 32
  exp.test_examples = 32
  exp.ood_examples = 32
  exp.curve_examples = 16
  exp.stats_examples = 0
  exp.hutchinson_probes = 4
  exp.sample_trace_examples = 8
  exp.hvp_chunk = 4
  exp.graying_alphas = (0.0, 0.5, 0.9)
  exp.graying_examples = 16
  exp.typicality_batch_sizes = (1, 4)
  exp.histogram_bins = 10
  exp.ensemble_size = 2
  exp.ensemble_models = 'glow'   # WAIC's plumbing is the same for every kind
  config.background.models = 'glow'  # so is the likelihood ratio's
  config.background.mutation_rates = (0.05, 0.3)  # the tuning path, on two candidates
  config.background.selection_steps = 3
  exp.compressors = 'png'
  exp.stress = 'rotate90,shift1,uniform_noise'
  exp.stress_examples = 16
  exp.corruptions = 'shot_noise,rotate'
  exp.corruption_severities = (1, 5)
  exp.corruption_examples = 8
  exp.bootstrap_resamples = 200
  return config
