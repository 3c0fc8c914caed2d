"""glad's benchmarks: one module per workload, on shared clocks, rounds and reports.

* ``timing``: clocks (CPU time, wall time, CUDA events), interleaved rounds, paired ratios;
* ``memory``: bytes kept between steps, transient peaks, resident set size;
* ``report``: the machine and clock a report was made on, its table header, its file;
* ``backbone``: the frozen CLIP, adapter settings and batch every model workload starts from;
* workloads: ``ops``, ``train``, ``eval``, ``data``, ``alignnet``, ``gradreg``, ``text``, ``host``,
  ``world``; each has a ``Config``, ``run(cfg, progress) -> report`` and ``table(report)``.

``glad bench NAME`` runs them; ``benchmarks/bench_NAME.py`` is the same command as a script.
"""
