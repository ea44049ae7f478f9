"""Speed tools: what a training step costs, where its time goes, and how long a study would take.

* :mod:`~taylorat.bench.bench`: training-step time and peak memory per model × method × precision
  (``taylorat bench``, paper Table 6);
* :mod:`~taylorat.bench.step_profile`: ``torch.profiler`` over a few steps, summarised per step;
* :mod:`~taylorat.bench.estimate`: a study's training time on this machine (``taylorat reproduce --dry-run``).
"""
