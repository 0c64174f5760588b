"""ServingBenchmark's candidate input keys, shared by its spec and its executor.

One input per candidate: Vertex (KubeflowV2DagRunner) compiles only single channels, not
a union of several, so candidates take numbered optional inputs, in order.
"""

MAX_CANDIDATES = 8
CANDIDATE_KEYS = tuple(f"candidate_{i}" for i in range(1, MAX_CANDIDATES + 1))
