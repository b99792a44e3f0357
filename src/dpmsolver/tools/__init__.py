"""Tools above the core (they import the core's public names only).

generation  sharded, resumable generation of many samples, under torchrun too
bench       the accuracy benchmark: each solver against a fine reference solve
measure     the reference solve, the RMS error, counting model calls
presets     the named solver settings of the CLI, the benchmarks and the tuner
memory      the peak memory a call holds (for the tests and benchmarks)
png         a dependency-free PNG writer and image grid
progress    the optional tqdm progress bar
"""
