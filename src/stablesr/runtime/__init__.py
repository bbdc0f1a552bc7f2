"""Running work on this machine and across a launch: device and precision, distributed sharding, memory,
console messages, and a generic batch runner (tally, stop flag, keep going past a failed item)."""
