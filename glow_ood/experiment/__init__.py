"""The experiment layer: one command per pair of data sets trains Glow and CV-Glow,
evaluates them, runs the Section 5 analysis and writes workdir/report.md.

  pipeline.run_pair(config, workdir)   the whole experiment (resumes what is done)
  eval_plan      which data sets and subsets are evaluated, and where the files go
  model_runs     train-or-resume, evaluate the final and every kept checkpoint
  model_analysis the model seen as a function of pixels: second-order terms, graying
  figures        the PNG figures;  report   report.md and results.json
  paper_numbers  the values reported in the paper, shown beside ours
"""

from glow_ood import extras  # pylint: disable=g-bad-import-order
extras.require('train', 'matplotlib')  # before the imports it checks

