"""On-demand benchmarks: each measures edgefleet against the bare library in the same run."""
