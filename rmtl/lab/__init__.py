"""The lab: experiments built on the method (:mod:`rmtl`) as graphs of units of work
(:mod:`rmtl.lab.graph`), where they run (:mod:`rmtl.lab.executors`: this process, local
worker processes, a Ray cluster), the main run (:mod:`rmtl.lab.run`, ``rmtl run``), Ray Tune
searches (:mod:`rmtl.lab.tune`, :mod:`rmtl.lab.sweep`), the critic-effect study
(:mod:`rmtl.lab.study`), and what they report (:mod:`rmtl.lab.report`,
:mod:`rmtl.lab.stats`, :mod:`rmtl.lab.convergence`, :mod:`rmtl.lab.plots`).

Nothing in the method imports the lab."""

from .experiment import ExperimentResult, experiment

__all__ = ["experiment", "ExperimentResult"]
