"""KFP adapters: kfp 2.x components over the same library as the TFX components."""
