from components.model_release.component import ModelRelease

__all__ = ["ModelRelease"]
