"""Side-by-side timings of htr_utils against peer libraries (run with `make bench`)."""
