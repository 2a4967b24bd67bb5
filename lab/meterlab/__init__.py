"""meter's lab: the benchmark (`meter bench`), the fault-and-invariant suite (`meter chaos`) and
the test bed they and the tests share. Tooling, not the product: installed beside meter for
development only (`lab/pyproject.toml`), never in the container."""
