"""Checks that hidden tests call: one module per assignment, named after it.

A hidden test cell holds only calls such as ``check_gaussian_kl(gaussian_kl)``, so generated
feedback shows the call and the check's message, never the test logic. Every check raises
``AssertionError`` with a message a student can act on, and uses the genlab package as its oracle.
"""
