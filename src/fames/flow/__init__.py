"""The flow layer: the one-call API (`approximate_`), `fames run`, reports and the demo."""
