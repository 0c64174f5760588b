from components.serving_benchmark.component import ServingBenchmark

__all__ = ["ServingBenchmark"]
