"""Studies: the paper's tables and taylorat's own studies, run and rendered from data.

* ``tables/*.yaml``: every cell of the paper's Tables 1–5, 7 and 8 as a study file;
* :mod:`~taylorat.studies.study`: the study file format (runs, seeds, evaluation, the paper's numbers);
* :mod:`~taylorat.studies.runner`: train what is missing, evaluate, write ``results.json``;
* :mod:`~taylorat.studies.render`, :mod:`~taylorat.studies.figures`, :mod:`~taylorat.studies.spread`: the page
  and its figures, drawn from ``results.json`` alone;
* :mod:`~taylorat.studies.demo`: the quick-start demo (``taylorat demo``).

``taylorat reproduce`` is the command line of this package; Table 6 (cost) is :mod:`taylorat.bench`.
"""
