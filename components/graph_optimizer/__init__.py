from components.graph_optimizer.component import GraphOptimizer

__all__ = ["GraphOptimizer"]
