"""Pure health-signal logic: no I/O, no metrics, no SDK imports. Sinks and guards build on these."""
