from components.freezer.component import Freezer

__all__ = ["Freezer"]
