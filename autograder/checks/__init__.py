"""The hidden tests' probes: one module per assignment, named after it.

A hidden test cell holds only imports and calls such as ``probe_gaussian_kl(gaussian_kl)``. In the
submission's kernel a probe only records what the student's code returns on inputs drawn from the
run's seed; after the notebook ran, ``VerifyProbes`` (outside the sandbox) runs the same function
with genlab's reference on the same inputs and writes each difference, with a message a student
can act on, into the test cell's output. See :mod:`autograder.probing` and CONTRIBUTING.md.
"""
