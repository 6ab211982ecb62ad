"""Parity: a backend's outputs against the eager reference (Polygraphy's Comparator).

* `compare`: feeds, per-output comparison with tolerances, the report;
* `job`: `hgdeploy parity`: resolve the artifact, its weights and the runners, then compare.
"""
