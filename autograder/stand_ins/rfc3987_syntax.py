"""A stand-in that makes ``import rfc3987_syntax`` fail, as if the package were not installed.

jsonschema imports rfc3987_syntax, when it is installed (jupyter-events asks for it), to check the
"iri" string format, and the package builds its grammar at import: about 1.3 s of CPU on an idle
machine, 8 s of a 12 s ``import ray`` on a loaded 2-core one. Every Python daemon of a local Ray
cluster pays it while the raylet gives its dashboard agent a fixed 15 s to start, which a loaded
machine then misses. Nothing of Ray's or the course's validates IRIs, and jsonschema treats a
failed import as an absent checker. runner.start_local puts this folder first on the
``PYTHONPATH`` of the cluster it starts (its daemons and workers), nowhere else.
"""

raise ImportError("rfc3987_syntax is left out of the grading cluster's processes (see autograder/stand_ins)")
