# Benchmarks (bench/README.md). `make bench`: the full suite, ~7 minutes (cluster stage ~3), prints a table and writes
# bench/results/latest.json. `make bench-smoke`: every stage for a second or so (CI; asserts nothing
# about speed, only that each stage runs and the JSON is written). `make bench-profile`: py-spy on
# alertd under single-event load.
.PHONY: bench bench-smoke bench-profile

bench: setup tools
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-smoke: setup tools
	$(BIN)/python -m bench.run --smoke --out bench/results/smoke.json
	$(BIN)/python -m bench.check bench/results/smoke.json

bench-profile: setup tools
	$(BIN)/pip install --quiet py-spy
	$(BIN)/python -m bench.profile $(PROFILE_ARGS)

TEST_EXTRA += bench-smoke
