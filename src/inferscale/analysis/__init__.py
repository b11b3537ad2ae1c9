"""The analysis of an experiment's evaluations: the points table over question sets and
difficulty groups, coverage and its laws, voting limits and the compute-optimal choice. Pure
data work (pandas, numpy, the `scaling` algorithms); the report and the tracking read it."""
