"""The course's grading side: checks called by hidden tests, the sandboxed kernel, parallel grading."""
