"""A throwaway redis-server on a free loopback port (tests, benchmarks, local use)."""
