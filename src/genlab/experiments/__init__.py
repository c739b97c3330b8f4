"""Experiment runners: scripts that train grids of models, measure them and write result tables."""
