"""``python -m genlab.experiments.harmonic``: see :mod:`genlab.experiments.harmonic.cli`."""

from genlab.experiments.harmonic.cli import main

raise SystemExit(main())
